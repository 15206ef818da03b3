"""Configuration of the facts service: its namespaces (each a shard with its own store, memory
and extractor), where they keep their data, and the HTTP endpoint."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, field_validator, model_validator

from models._private.core.config import Name
from models._private.core.journal import journal_location
from models._private.core.tracing import TracingConfig
from models._private.facts.schema import FactsConfig
from models._private.facts.store.core import READ_TIMEOUT_S
from models._private.memory.schema import MemoryConfig
from serve._private.auth.config import AuthConfig
from serve._private.service_config import ServiceConfig, auth_field, control_resources_field

__all__ = ["FactsNamespaceConfig", "FactsServiceConfig"]


class FactsNamespaceConfig(FactsConfig):
    """One namespace of the facts service: a store of documents, entities and facts, held by
    one Ray actor (its shard), and how it reads and searches them."""

    extractor: Literal["spacy", "llm", "none"] = Field(
        "spacy",
        description="How entities and facts are read from documents: spacy (offline, the "
        "default), llm (a model on the AI service; see `llm_model`), none (facts are only posted).",
    )
    llm_model: str | None = Field(
        None, description="The AI service's model that extracts, for extractor llm."
    )
    memory: MemoryConfig = Field(
        default_factory=MemoryConfig,
        description="The hybrid memory of its passages and fact sentences (its path is set by the service).",
    )
    graph_weight: NonNegativeFloat = Field(
        0.6, description="Score graph search adds to a passage about an entity at distance 0."
    )
    graph_rerank: Literal["hop", "distance", "pagerank"] = Field(
        "hop", description="How graph search lifts passages (benchmarks/README.md, facts)."
    )
    extract_batch: PositiveInt = Field(32, description="Documents the extractor reads at once.")
    extract_max_attempts: PositiveInt = Field(
        3,
        description="Times a document is read alone with the extractor failing on it while its "
        "service answers (a document that kills the spaCy replica, or always gets a 5xx) before "
        "it is marked failed with the reason; an outage counts against no document.",
    )
    read_timeout_s: PositiveFloat = Field(
        READ_TIMEOUT_S,
        description="Longest one read of its store may take; a read stopped at it is answered 503 "
        "(ask for less: a limit, a depth). Reads run beside writes, never holding them up.",
    )
    torch_threads: PositiveInt | None = Field(
        None,
        description="Threads its embedder computes with; None: the node's cores (Ray would "
        "otherwise cap an actor of num_cpus 0 or 1 at one).",
    )
    num_cpus: NonNegativeFloat = Field(
        0.0,
        description="Logical CPUs its shard actor reserves (it embeds and extracts; 0 lets it "
        "share, as memory stores do, so that a 2-core machine runs the whole system).",
    )

    @model_validator(mode="after")
    def _llm(self) -> FactsNamespaceConfig:
        if self.extractor == "llm" and not self.llm_model:
            raise ValueError("extractor llm needs llm_model: the AI service's model that extracts")
        if self.memory.path is not None:
            raise ValueError("memory.path is set by the service (under its `path`); leave it out")
        return self


class FactsServiceConfig(ServiceConfig):
    """The facts service on Ray Serve: documents, a temporal knowledge graph, hybrid and graph
    search over HTTP, one shard actor per namespace."""

    port: PositiveInt = Field(8000, description="Serve's HTTP port (shared with the AI service).")
    route_prefix: str = Field("/facts", description="Where the API sits under Serve's HTTP root.")
    path: str | None = Field(
        None,
        description="Local directory of the namespaces' data (SQLite and the memories' logs); "
        "None: ~/.swarmray/journal/<system namespace>/_facts.",
    )
    namespaces: dict[Name, FactsNamespaceConfig] = Field(
        default_factory=lambda: {"default": FactsNamespaceConfig()},
        description="Namespaces by name; each is isolated from the others (its own store, "
        "entities and indexes).",
    )
    ai_url: str | None = Field(
        None,
        description="The AI service's API root (…/v1) for the llm extractor; `swarm up` fills it "
        "from the system's AI service.",
    )
    api_key_env: str | None = Field(
        None, description="Environment variable holding the key the llm extractor sends."
    )
    sync_max_documents: PositiveInt = Field(
        64,
        description="Larger batches are stored and answered at once with 202 and a job; their "
        "passages are indexed in the background (smaller ones are searchable on return).",
    )
    max_batch_documents: PositiveInt = Field(10_000, description="Most documents one request may post.")
    ingress_replicas: PositiveInt = Field(1, description="Replicas of the stateless HTTP ingress.")
    colocate: bool | None = Field(
        None,
        description="Run every namespace's shard inside the ingress replica rather than in a "
        "deployment of its own: a request makes one Ray call less (a search about 5 ms less). "
        "Needs ingress_replicas 1, since a namespace has one writer. None: colocated when "
        "ingress_replicas is 1.",
    )
    ingress_max_ongoing_requests: PositiveInt = Field(
        256,
        description="Requests one ingress replica handles at once (it only waits on the shards; "
        "Serve's default of 5 would let five slow reads hold up every namespace).",
    )
    auth: AuthConfig = auth_field()
    control_resources: dict[str, PositiveFloat] = control_resources_field(
        "the key authority and every namespace's shard"
    )
    tracing: TracingConfig = Field(
        default_factory=TracingConfig,
        description="Server spans of the requests, nested in their callers' traces (`traceparent`); "
        "in a system config, the system's `tracing` unless set here.",
    )

    extractor_replicas: PositiveInt = Field(
        1,
        description="Replicas of the spaCy extractor deployment, which every spacy namespace "
        "shares (each reads a batch at a time: more replicas read more at once, on any node).",
    )
    extractor_num_cpus: NonNegativeFloat = Field(0.0, description="Logical CPUs each extractor reserves.")

    @field_validator("path")
    @classmethod
    def _local(cls, v: str | None) -> str | None:
        if v is not None and "://" in v:
            raise ValueError("SQLite needs a local (or mounted) directory, not a URL")
        return v

    @model_validator(mode="after")
    def _some(self) -> FactsServiceConfig:
        if not self.namespaces:
            raise ValueError("the facts service needs at least one namespace")
        return self

    @model_validator(mode="after")
    def _one_writer(self) -> FactsServiceConfig:
        if self.colocate and self.ingress_replicas > 1:
            raise ValueError(
                "colocate runs each namespace's one shard inside the ingress replica: it needs "
                "ingress_replicas 1 (or colocate false)"
            )
        return self

    def colocated(self) -> bool:
        """Whether the namespaces' shards run inside the ingress replica (`colocate`)."""
        return self.ingress_replicas == 1 if self.colocate is None else self.colocate

    def needs_ai(self) -> bool:
        """Whether a namespace extracts with the AI service."""
        return any(n.extractor == "llm" for n in self.namespaces.values())

    def with_ai(self, url: str) -> FactsServiceConfig:
        """This config with `ai_url` set, unless it names one already."""
        return self if self.ai_url else self.model_copy(update={"ai_url": url})

    def namespace_path(self, system: str, namespace: str) -> str:
        """The directory of one namespace's data, for the system (Ray namespace) `system`."""
        root = journal_location(None, system, "_facts") if self.path is None else self.path
        return os.path.join(os.path.abspath(os.path.expanduser(root)), namespace)
