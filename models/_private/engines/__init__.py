"""Inference engines: the `Engine` interface and its config (`base`), `create_engine`
(`factory`), the transformers and the vLLM engine (`transformers_engine`, `vllm_engine`),
model sources that are GGUF files (`gguf_sources`), and the tests' tiny random-weight model
(`tiny_model`).

Nothing is re-exported here, so that importing the interface does not import torch (the public
names are in `models`).
"""
