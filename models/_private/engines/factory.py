"""`create_engine`: the one place that knows every engine implementation and picks one.

It lives apart from `base.py` because the implementations import their base from there; a
factory beside the base would close an import circle.
"""

from __future__ import annotations

from models._private.engines.base import Engine, EngineConfig, resolve_engine_kind
from models._private.engines.gguf_sources import dequantized, gguf_tokenizer, is_gguf, resolve_source
from models._private.engines.transformers_engine import TransformersEngine

__all__ = ["create_engine"]


def create_engine(source: str, config: EngineConfig | None = None) -> Engine:
    """Loads the model at `source` in the engine `config` names.

    `source` is a local directory, a hub id, or a GGUF file: a path, or `package:<pkg>/<file>`
    inside an installed package. vLLM loads a GGUF file itself (with the tokenizer it carries);
    the transformers engine loads its dequantised copy, cached on first use.

    Raises:
        EngineUnavailableError: vLLM was asked for where it cannot run.
        EngineError: a `package:` source that is not installed.
    """
    config = config or EngineConfig()
    path = resolve_source(source)
    if resolve_engine_kind(config.kind) == "vllm":
        # Imported only when asked for, as vLLM itself is optional (the `gpu` extra).
        from models._private.engines.vllm_engine import VLLMEngine

        return VLLMEngine(path, config, tokenizer=gguf_tokenizer(path) if is_gguf(path) else None)
    return TransformersEngine(dequantized(path) if is_gguf(path) else path, config)
