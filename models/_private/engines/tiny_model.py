"""The smoke-test model: a tiny random-weight causal LM built from a seed, for fast tests of
the real path (tokenizer, chat template, engine, Serve, HTTP). Its text is noise; the service's
default model is a real one (`models._private.engines.gguf_sources`).
"""

from __future__ import annotations

import os

__all__ = ["build_tiny_model"]

# Jinja, as Hugging Face chat templates are; ChatML-like turns.
_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_SPECIAL = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]


def build_tiny_model(
    path: str,
    *,
    vocab_size: int = 512,
    layers: int = 2,
    hidden: int = 64,
    max_positions: int = 512,
    seed: int = 0,
) -> str:
    """Writes a random-weight Llama-architecture model and a byte-level BPE tokenizer to `path`.

    Returns `path`. Everything is built here from a seed: no download.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any byte is representable
        show_progress=False,
    )
    bpe.train_from_iterator([_TRAINING_TEXT] * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        model_max_length=max_positions,
    )
    tokenizer.chat_template = _CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    with open(os.path.join(path, "SMOKE_TEST_MODEL.txt"), "w") as f:
        f.write("Random weights built by swarmray for smoke tests. Its output is noise.\n")
    return path


_TRAINING_TEXT = """
Swarms of agents share work across a cluster. A queen takes tasks and hands them to agents.
Memory keeps what the swarm has learnt; search finds it again by meaning and by words.
The quick brown fox jumps over the lazy dog. Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000.
User: hello, how are you? Assistant: fine, thank you. System: you are a helpful assistant.
"""
