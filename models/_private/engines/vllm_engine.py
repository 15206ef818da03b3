"""The vLLM engine: vLLM's async engine behind the `Engine` interface (GPU nodes only).

vLLM is imported when an engine is built, never at module import, so CPU machines without the
`gpu` extra can import everything else.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from models._private.core.errors import EngineError
from models._private.engines.base import (
    Delta,
    Engine,
    EngineConfig,
    SamplingParams,
    resolve_engine_kind,
)

__all__ = ["VLLMEngine", "vllm_engine_args", "vllm_sampling_args", "vllm_sampling_params"]


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
    """Keyword arguments for `vllm.SamplingParams` from ours (no vLLM needed).

    A `json_schema` comes out as `structured_outputs`: the keyword arguments of vLLM's
    structured-output parameters (`json`, and `disable_any_whitespace` for the compact JSON the
    transformers engine writes), which `vllm_sampling_params` turns into vLLM's object.
    """
    args: dict[str, Any] = {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop": list(params.stop) or None,
        "seed": params.seed,
    }
    if params.json_schema is not None:
        args["structured_outputs"] = {"json": params.json_schema, "disable_any_whitespace": True}
    return {k: v for k, v in args.items() if v is not None}


def vllm_sampling_params(params: SamplingParams, sampling: Any) -> Any:
    """vLLM's `SamplingParams` for ours, built with the classes of `sampling` (the module
    `vllm.sampling_params` of the installed vLLM).

    Structured outputs are `structured_outputs=StructuredOutputsParams(...)` from vLLM 0.10.2
    on, and `guided_decoding=GuidedDecodingParams(...)` before (0.6.3 to 0.10.1, which may lack
    `disable_any_whitespace`: what the class does not take is left out).
    """
    args = vllm_sampling_args(params)
    structured = args.pop("structured_outputs", None)
    if structured is not None:
        if hasattr(sampling, "StructuredOutputsParams"):
            keyword, cls = "structured_outputs", sampling.StructuredOutputsParams
        else:
            keyword, cls = "guided_decoding", sampling.GuidedDecodingParams
        taken = {f.name for f in dataclasses.fields(cls)}
        args[keyword] = cls(**{k: v for k, v in structured.items() if k in taken})
    return sampling.SamplingParams(**args)


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
        self,
        prompt: str,
        params: SamplingParams,
        *,
        chat: bool = False,
        admitted: Callable[[], None] | None = None,
    ) -> AsyncIterator[Delta]:
        from vllm import sampling_params as vllm_sampling

        ids, params = await self._tokens_and_params(prompt, params, chat)
        request_id = f"swarmray-{os.getpid()}-{next(self._ids)}"
        sent = ""
        if admitted is not None:
            # vLLM's scheduler tells no one when a request leaves its waiting queue: admitted
            # when handed to it (a model deployment's max_ongoing_requests keeps that queue short).
            admitted()
        async for out in self.engine.generate(
            {"prompt_token_ids": ids}, vllm_sampling_params(params, vllm_sampling), request_id
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
