"""The Serve deployments behind the gateway: one per model, and the embedder."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from ray import serve

from models._private.core import names
from models._private.engines.base import SamplingParams, off_the_loop_if_long
from models._private.engines.tool_calls import fallback_messages
from serve._private.ai.admission import Admission
from serve._private.ai.config import ModelConfig

__all__ = ["EmbeddingServer", "ModelServer", "model_deployment_options"]


class ModelServer:
    """One replica of one model: its engine, the chat template, generation and health.

    Requests are dicts: {"prompt": str} or {"messages": [...], "tools"?: [...]}, plus "params"
    (SamplingParams). Messages are OpenAI's: they may carry `tool_calls` or a `tool_call_id`.
    An engine whose chat template renders tools gets them as they are; for one whose template
    cannot, they are offered in the system message and the calls and results turned into plain
    messages (`tool_calls.fallback_messages`).

    Admission (`admission.Admission`): up to `max_queued_requests` requests wait for the
    engine's batch beyond its free rows, and one more is refused at once
    (`ModelOverloadedError`); `timeout_s` counts from when the engine admits a request: its
    whole answer, or a stream's first piece and each next one, must come within it
    (`EngineTimeoutError` otherwise, a failure the gateway falls back from).
    """

    def __init__(self, config: dict[str, Any]):
        from models._private.engines.factory import create_engine

        self.config = ModelConfig.model_validate(config)
        self.engine = create_engine(self.config.source, self.config.engine)
        self.admission = Admission(self.config.name, self.config.max_queued_requests, self.engine.batch_rows)

    async def _prompt(self, request: dict[str, Any]) -> tuple[str, bool]:
        if "messages" in request:
            messages, tools = request["messages"], request.get("tools")
            chars = sum(
                len(str(m.get("content") or "")) + len(str(m.get("tool_calls") or "")) for m in messages
            )
            chars += len(str(tools or ""))
            return await off_the_loop_if_long(chars, self._chat_prompt, messages, tools), True
        return request["prompt"], False

    def _chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        if self.engine.supports_tools:
            return self.engine.chat_prompt(messages, tools) if tools else self.engine.chat_prompt(messages)
        return self.engine.chat_prompt(fallback_messages(messages, tools))

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        prompt, chat = await self._prompt(request)
        ticket = self.admission.enter()
        try:
            params = SamplingParams(**request["params"])
            work = self.engine.generate(prompt, params, chat=chat, admitted=ticket.admit)
            return asdict(await ticket.within(work, self.config.timeout_s))
        finally:
            ticket.leave()

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        prompt, chat = await self._prompt(request)
        ticket = self.admission.enter()
        try:
            params = SamplingParams(**request["params"])
            deltas = self.engine.stream(prompt, params, chat=chat, admitted=ticket.admit)
            async for delta in ticket.stream(deltas, self.config.timeout_s):
                yield asdict(delta)
        finally:
            ticket.leave()

    def counters(self) -> dict[str, Any]:
        """Requests answered, waiting for the engine now, and refused for a full queue; seconds
        with a request in the engine (`busy_s`, up to now), the
        engine's own counts when it keeps them (the transformers engine's `batches`, decode
        passes `steps` and the rows they decoded `row_steps`, its prompt passes `prefills` and
        the requests that `joined` a running batch; None otherwise) and torch's
        threads: what a benchmark reads to see how busy the engine was and how full its passes."""
        torch = sys.modules.get("torch")  # the threads its CPU kernels use (Ray sets num_cpus)
        return {
            "requests": self.admission.answered,
            "waiting": self.admission.waiting,  # for the engine's batch, now
            "refused": self.admission.refused,  # for a full queue (max_queued_requests)
            "busy_s": self.admission.busy_s(),
            "batches": getattr(self.engine, "batches", None),
            "steps": getattr(self.engine, "steps", None),
            "row_steps": getattr(self.engine, "row_steps", None),
            "prefills": getattr(self.engine, "prefills", None),
            "joined": getattr(self.engine, "joined", None),
            "torch_threads": torch.get_num_threads() if torch is not None else None,
        }

    async def check_health(self) -> None:
        # Serve calls this every health_check_period_s; raising restarts the replica.
        await self.engine.check_health()

    def info(self) -> dict[str, Any]:
        import ray

        ctx = ray.get_runtime_context()
        return {
            "name": self.config.name,
            "pid": os.getpid(),
            "engine": type(self.engine).__name__,
            "max_model_len": self.engine.max_model_len,
            "source": self.config.source,
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "node_id": ctx.get_node_id(),
            "placement_group_id": ctx.get_placement_group_id(),  # hex, or None
        }


class EmbeddingServer:
    """The memory's embedder behind /v1/embeddings."""

    def __init__(self, config: dict[str, Any]):
        from models._private.retrieval.embedder import Embedder, EmbedderConfig

        self.embedder = Embedder(EmbedderConfig.model_validate(config))
        self.max_tokens = self.embedder.max_tokens

    async def embed(self, texts: list[str]) -> dict[str, Any]:
        """Vectors and token counts; or, when a text is longer than the model reads, which ones
        (`too_long`: [(index, tokens)]) and the limit, and no vectors: the embedder would cut
        them silently."""
        # In a thread: Serve may run user code on the replica's own loop (throughput-optimised).
        return await asyncio.to_thread(self._embed, texts)

    def _embed(self, texts: list[str]) -> dict[str, Any]:
        tokenizer = self.embedder.tokenizer()
        counts = [len(ids) for ids in tokenizer(texts)["input_ids"]]
        if too_long := [(i, n) for i, n in enumerate(counts) if n > self.max_tokens]:
            return {"too_long": too_long, "max_tokens": self.max_tokens}
        return {"vectors": self.embedder.encode(texts).tolist(), "tokens": counts}


def model_deployment_options(config: ModelConfig) -> dict[str, Any]:
    """`serve.deployment(...).options(...)` arguments for one model (no Ray needed).

    One GPU shard (tensor_parallel_size 1): the replica actor itself asks for `num_gpus`
    (fractions pack replicas onto one GPU) and `accelerator_type`. Tensor parallelism: the
    replica gets a placement group, a first bundle for itself (CPU only) and one bundle of one
    GPU per shard, which vLLM's Ray workers take.
    """
    r, tp = config.resources, config.engine.tensor_parallel_size
    actor = {"num_cpus": 1, **r.ray_options()}
    options: dict[str, Any] = {
        "name": names.deployment_name(config.name),
        "max_ongoing_requests": config.max_ongoing_requests,
        # Serve's own bound on the requests that wait at a caller (each gateway replica) for a
        # replica: one more raises BackPressureError there, which the gateway answers as a full
        # queue. Those that wait inside a replica are bounded by max_ongoing_requests.
        "max_queued_requests": -1 if config.max_queued_requests is None else config.max_queued_requests,
        "health_check_period_s": config.health_check_period_s,
        "health_check_timeout_s": config.health_check_timeout_s,
    }
    if tp > 1:
        # The GPUs move from the replica to its placement group, one bundle per shard.
        actor.pop("num_gpus", None)
        accelerator = actor.pop("accelerator_type", None)
        gpu_bundle: dict[str, float] = {"GPU": 1}
        if accelerator:
            gpu_bundle[f"accelerator_type:{accelerator}"] = 0.001
        options["placement_group_bundles"] = [
            {"CPU": actor["num_cpus"], **actor.get("resources", {})},
            *[dict(gpu_bundle) for _ in range(tp)],
        ]
        options["placement_group_strategy"] = config.placement_strategy
    options["ray_actor_options"] = actor
    a = config.autoscaling
    if a.max_replicas > a.min_replicas:
        options["autoscaling_config"] = {
            "min_replicas": a.min_replicas,
            "initial_replicas": max(1, a.min_replicas),
            "max_replicas": a.max_replicas,
            "target_ongoing_requests": a.target_ongoing_requests,
            "upscale_delay_s": a.upscale_delay_s,
            "downscale_delay_s": a.downscale_delay_s,
        }
    else:
        options["num_replicas"] = a.max_replicas
    return options


def model_app(config: ModelConfig) -> Any:
    """A bound deployment of `config`'s model."""
    return serve.deployment(ModelServer).options(**model_deployment_options(config)).bind(config.model_dump())


def embedding_app(config: Any) -> Any:
    """A bound embedder deployment."""
    return (
        serve.deployment(EmbeddingServer)
        .options(name=names.EMBEDDINGS_DEPLOYMENT, ray_actor_options={"num_cpus": 1})
        .bind(config.model_dump())
    )
