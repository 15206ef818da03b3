"""The vLLM engine: vLLM's async engine behind the `Engine` interface (GPU nodes only).

vLLM is imported when an engine is built, never at module import, so CPU machines without the
`gpu` extra can import everything else.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from typing import Any

from models._private.core.errors import EngineError
from models._private.engines.base import (
    Delta,
    Engine,
    EngineConfig,
    SamplingParams,
    resolve_engine_kind,
)

__all__ = ["VLLMEngine", "vllm_engine_args", "vllm_sampling_args"]


def vllm_engine_args(source: str, config: EngineConfig, tokenizer: str | None = None) -> dict[str, Any]:
    """Keyword arguments for `vllm.AsyncEngineArgs` from our config (no vLLM needed);
    `tokenizer` defaults to `source` (a GGUF file's comes from `gguf_sources.gguf_tokenizer`)."""
    args: dict[str, Any] = {
        "model": source,
        "tokenizer": tokenizer or source,
        "dtype": config.dtype,
        "tensor_parallel_size": config.tensor_parallel_size,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "trust_remote_code": config.trust_remote_code,
        # Under Ray Serve the replica's placement group holds the GPUs; vLLM's workers join it.
        "distributed_executor_backend": "ray" if config.tensor_parallel_size > 1 else None,
    }
    if config.max_model_len is not None:
        args["max_model_len"] = config.max_model_len
    clash = sorted(set(config.vllm_args) & set(args))
    if clash:
        raise ValueError(f"vllm_args repeats {clash}; set those through the engine's own fields")
    return {**{k: v for k, v in args.items() if v is not None}, **config.vllm_args}


def vllm_sampling_args(params: SamplingParams) -> dict[str, Any]:
    """Keyword arguments for `vllm.SamplingParams` from ours (no vLLM needed)."""
    args: dict[str, Any] = {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop": list(params.stop) or None,
        "seed": params.seed,
    }
    return {k: v for k, v in args.items() if v is not None}


class VLLMEngine(Engine):
    """A model served by vLLM's `AsyncLLMEngine` (continuous batching, paged attention).

    Raises:
        EngineUnavailableError: vLLM is not installed, or no GPU is visible.
    """

    def __init__(self, source: str, config: EngineConfig | None = None, tokenizer: str | None = None):
        self.config = config or EngineConfig(kind="vllm")
        resolve_engine_kind("vllm")  # the clear error, before vLLM's own
        if os.path.isdir(source):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        self.engine = AsyncLLMEngine.from_engine_args(
            AsyncEngineArgs(**vllm_engine_args(source, self.config, tokenizer))
        )
        # The same tokenizer vLLM loads, read here for chat templates and counting.
        self.tokenizer = AutoTokenizer.from_pretrained(
            tokenizer or source, trust_remote_code=self.config.trust_remote_code
        )
        self.max_model_len = int(self.config.max_model_len or _engine_max_len(self.engine, self.tokenizer))
        self._ids = itertools.count()

    async def stream(
        self, prompt: str, params: SamplingParams, *, chat: bool = False
    ) -> AsyncIterator[Delta]:
        from vllm import SamplingParams as VSamplingParams

        ids, params = await self._tokens_and_params(prompt, params, chat)
        request_id = f"swarmray-{os.getpid()}-{next(self._ids)}"
        sent = ""
        async for out in self.engine.generate(
            {"prompt_token_ids": ids}, VSamplingParams(**vllm_sampling_args(params)), request_id
        ):
            choice = out.outputs[0]
            piece, sent = choice.text[len(sent) :], choice.text
            if piece or out.finished:
                yield Delta(
                    piece,
                    choice.finish_reason if out.finished else None,
                    len(ids),
                    len(choice.token_ids),
                )

    async def check_health(self) -> None:
        try:
            await self.engine.check_health()
        except Exception as e:
            raise EngineError(f"vLLM engine is unhealthy: {e!r}") from e


def _engine_max_len(engine: Any, tokenizer: Any) -> int:
    for path in ("model_config.max_model_len", "engine.model_config.max_model_len"):
        obj: Any = engine
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, int):
            return obj
    return int(tokenizer.model_max_length)
