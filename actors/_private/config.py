"""Configuration of swarms and the meta registry: one pydantic model per concept.

A swarm is a queen, a health monitor and one or more agent pools; a pool is a set of identical
agents (one agent class) placed on Ray actors with the pool's resources. `cluster.SystemConfig`
composes these with the AI service's and the memory's configuration.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from actors._private.agents.agent import Agent
from models._private.core.breaker import CircuitBreakerConfig
from models._private.core.config import (
    CapabilityFamily,
    CapabilityName,
    ConfigModel,
    Name,
    import_object,
    named,
)
from models._private.core.resources import ResourcesConfig
from models._private.memory.schema import MemoryConfig

__all__ = [
    "AgentConfig",
    "AgentPoolConfig",
    "CapabilityConfig",
    "HealthConfig",
    "JournalConfig",
    "MemoryStoreConfig",
    "QueenConfig",
    "RegistryConfig",
    "SupervisionConfig",
    "SwarmConfig",
    "ToolAnnotationsConfig",
]


class ToolAnnotationsConfig(ConfigModel):
    """Hints about a capability for MCP clients, as the MCP tool annotations of the same names
    (the swarm's /mcp endpoint lists them with its tool): each unset one is left out. Hints, not
    guarantees: nothing checks that a capability marked read-only writes nothing."""

    title: str | None = Field(None, description="A human-readable title for the tool.")
    read_only_hint: bool | None = Field(
        None, alias="readOnlyHint", description="True if it changes nothing outside the task."
    )
    destructive_hint: bool | None = Field(
        None, alias="destructiveHint", description="True if it may delete or overwrite (not read-only)."
    )
    idempotent_hint: bool | None = Field(
        None,
        alias="idempotentHint",
        description="True if running it again with the same payload adds nothing.",
    )
    open_world_hint: bool | None = Field(
        None, alias="openWorldHint", description="True if it reaches outside the system (the web, a service)."
    )

    def hints(self) -> dict[str, Any]:
        """The annotations set, under their MCP names (`readOnlyHint`, ...)."""
        return self.model_dump(by_alias=True, exclude_none=True)


class CapabilityConfig(ConfigModel):
    """A capability an agent offers: a dotted name tasks ask for, or a family of them (`prefix.*`,
    every name under the prefix: the agent learns which from the task and checks its payload)."""

    name: CapabilityName | CapabilityFamily = Field(
        description="Dotted capability name, e.g. 'text.stats', or a family, e.g. 'mcp.everything.*'."
    )
    description: str = Field(
        "", description="What the capability does, shown by `swarm capabilities`; default the agent's own."
    )
    timeout_s: PositiveFloat | None = Field(
        None, description="Default per-attempt timeout for tasks of this capability."
    )
    annotations: ToolAnnotationsConfig | None = Field(
        None,
        description="MCP tool annotations (readOnlyHint, ...); each one set overrides the agent's own.",
    )


class AgentConfig(ConfigModel):
    """One agent kind: a class by import path, its capabilities and its parameters."""

    class_path: str = Field(
        alias="class",
        description="Import path 'package.module:Class' of an actors.Agent subclass.",
    )
    capabilities: list[CapabilityConfig] = Field(
        default_factory=list,
        description="Capabilities offered; empty means the class's own `capabilities`.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments passed to the agent's constructor."
    )
    max_concurrent_tasks: PositiveInt = Field(
        1, description="Tasks one agent runs at once (raise for I/O-bound async agents)."
    )

    @field_validator("capabilities", mode="before")
    @classmethod
    def _bare_names(cls, v: Any) -> Any:
        # Capabilities may be written as bare names or as mappings.
        if isinstance(v, list):
            return [{"name": c} if isinstance(c, str) else c for c in v]
        return v

    @model_validator(mode="after")
    def _class_resolves(self) -> AgentConfig:
        cls = import_object(self.class_path)
        if not (isinstance(cls, type) and issubclass(cls, Agent)):
            raise ValueError(f"{self.class_path!r} is not a subclass of actors.Agent")
        if not self.capabilities and not cls.capabilities:
            raise ValueError(f"no capabilities: set `capabilities` or define them on {self.class_path!r}")
        # The class's own MCP hints are checked here too: found when the queen builds its
        # catalog, one typo would break the tool list of the whole system.
        for capability, hints in getattr(cls, "annotations", {}).items():
            try:
                ToolAnnotationsConfig.model_validate(hints)
            except ValidationError as e:
                why = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
                raise ValueError(f"{self.class_path}.annotations[{capability!r}]: {why}") from None
        # Checked here, not when the host builds the agent: a typo would crash-loop the pool.
        try:  # annotations as types, not strings, for the message
            signature = inspect.signature(cls, eval_str=True)
        except Exception:
            signature = inspect.signature(cls)
        try:
            signature.bind(**self.params)
        except TypeError as e:
            why = str(e).replace("got an unexpected keyword argument", "unexpected keyword")
            raise ValueError(f"params do not fit {self.class_path}{signature}: {why}") from None
        return self

    @property
    def capability_names(self) -> list[str]:
        """Capability names this agent offers."""
        if self.capabilities:
            return [c.name for c in self.capabilities]
        return list(import_object(self.class_path).capabilities)


class AgentPoolConfig(ConfigModel):
    """A pool of identical agents on Ray actors, scaled between bounds by backlog."""

    name: Name = Field(description="Pool name, unique in its swarm (filled from the mapping key).")
    agent: AgentConfig = Field(description="The agent kind every member of the pool runs.")
    min_agents: NonNegativeInt = Field(1, description="Agents kept running even when idle.")
    max_agents: PositiveInt = Field(1, description="Upper bound on agents under backlog.")
    agents_per_actor: PositiveInt = Field(
        1,
        description="Agents hosted by one Ray actor: 1 isolates each agent (and its GPU); "
        "more packs light I/O-bound agents into one process.",
    )
    resources: ResourcesConfig = Field(
        default_factory=ResourcesConfig, description="Ray resources per actor."
    )
    colocate: bool = Field(
        False,
        description="Run the agents inside the queen's own process: no Ray call per task (the "
        "fastest path for light async agents), but no isolation and no resources of their own.",
    )
    scale_up_backlog: PositiveFloat = Field(
        2.0, description="Queued tasks per running agent above which the pool grows."
    )
    scale_down_idle_s: PositiveFloat = Field(
        30.0, description="Seconds an agent above min_agents may sit idle before it is removed."
    )
    ready_timeout_s: PositiveFloat = Field(
        10.0, description="Seconds an actor may take to start before it is reported pending."
    )

    @model_validator(mode="after")
    def _bounds(self) -> AgentPoolConfig:
        if self.max_agents < self.min_agents:
            raise ValueError(f"max_agents ({self.max_agents}) must be >= min_agents ({self.min_agents})")
        if self.colocate and self.resources != ResourcesConfig():
            raise ValueError(
                f"colocate agents run in the queen and cannot ask for resources "
                f"(got {self.resources.model_dump(exclude_defaults=True)})"
            )
        return self


class QueenConfig(ConfigModel):
    """How a swarm's queen queues, times out and retries tasks."""

    max_queued_tasks: PositiveInt = Field(
        10_000, description="Tasks waiting for an agent before submit raises BackpressureError."
    )
    default_timeout_s: PositiveFloat = Field(
        60.0, description="Per-attempt timeout when neither task nor capability sets one."
    )
    max_retries: NonNegativeInt = Field(2, description="Extra attempts after an agent raises or times out.")
    retry_backoff_s: NonNegativeFloat = Field(
        0.1, description="Delay before the first retry; doubles each attempt, with jitter."
    )
    max_retry_backoff_s: NonNegativeFloat = Field(5.0, description="Cap on the retry delay.")
    max_host_failures: NonNegativeInt = Field(
        5,
        description="Attempts a task may lose to its agent's process dying or being restarted; "
        "not counted in max_retries, since the task did nothing wrong.",
    )
    stuck_after_s: PositiveFloat = Field(
        30.0,
        description="Seconds a cancelled or timed-out attempt's work may go on (a sync agent's "
        "thread cannot be stopped) before its host counts as stuck and is replaced; its agent "
        "takes no other task meanwhile.",
    )
    keep_results: PositiveInt = Field(
        100_000, description="Finished results kept for `result`; the oldest are dropped first."
    )

    @model_validator(mode="after")
    def _backoff_bounds(self) -> QueenConfig:
        if self.max_retry_backoff_s < self.retry_backoff_s:
            raise ValueError(
                f"max_retry_backoff_s ({self.max_retry_backoff_s}) must be >= "
                f"retry_backoff_s ({self.retry_backoff_s})"
            )
        return self


class HealthConfig(ConfigModel):
    """How a swarm's health monitor watches its agents."""

    period_s: PositiveFloat = Field(2.0, description="Seconds between health rounds.")
    ping_timeout_s: PositiveFloat = Field(
        5.0, description="Seconds an agent actor may take to answer a ping before it is replaced."
    )
    queen_timeout_s: PositiveFloat = Field(
        30.0,
        description="Seconds the queen may take to answer before the swarm is reported "
        "unreachable (a queen working through a deep backlog answers late, not never).",
    )


class SupervisionConfig(ConfigModel):
    """OTP-style restart policy for a swarm's agent hosts (its children)."""

    strategy: Literal["one_for_one", "one_for_all", "rest_for_one"] = Field(
        "one_for_one",
        description="Which hosts restart when one fails: that one; all; or it and every host "
        "started after it.",
    )
    max_restarts: NonNegativeInt = Field(
        10, description="Restart intensity: restarts allowed within period_s before escalating."
    )
    period_s: PositiveFloat = Field(60.0, description="The intensity window, in seconds.")
    recover_after_s: PositiveFloat | None = Field(
        30.0,
        description="After escalating, seconds before the swarm rebuilds its agents and tries "
        "again; None waits for `swarm up`.",
    )


class JournalConfig(ConfigModel):
    """Where and how a queen journals its tasks."""

    uri: str | None = Field(
        None,
        description="Local directory or fsspec URI (s3://bucket/prefix, ...) below which the "
        "journal lives, at <uri>/<namespace>/<swarm>; None is ~/.swarmray/journal. Swarms may "
        "share one; `swarm down` deletes only their own prefix. Must be shared storage on a "
        "multi-node cluster for a queen to recover on another node.",
    )
    sync: bool = Field(
        True, description="fdatasync each batch (survives a machine crash, not just a process crash)."
    )
    compact_after_mb: PositiveFloat = Field(
        64.0, description="Journal size that triggers compaction to the live tasks and results."
    )


class MemoryStoreConfig(ConfigModel):
    """A swarm's memory store (or the global one): the memory and its upkeep."""

    namespaces: list[Name] = Field(
        default_factory=list, description="Namespaces it holds; empty means just its own name."
    )
    memory: MemoryConfig = Field(
        default_factory=MemoryConfig, description="Embedder, index kind, fusion, tiers, path."
    )
    sweep_period_s: PositiveFloat = Field(30.0, description="Seconds between expiry/promotion sweeps.")
    snapshot_period_s: PositiveFloat = Field(
        300.0, description="Seconds between snapshots, taken at the first sweep that many seconds on."
    )

    @model_validator(mode="after")
    def _periods(self) -> MemoryStoreConfig:
        if self.snapshot_period_s < self.sweep_period_s:
            raise ValueError(
                f"snapshot_period_s ({self.snapshot_period_s}) must be at least sweep_period_s "
                f"({self.sweep_period_s}): snapshots are taken at sweeps"
            )
        return self

    num_cpus: NonNegativeFloat = Field(0.0, description="Logical CPUs the store actor reserves.")
    num_gpus: NonNegativeFloat = Field(0.0, description="GPUs for the embedder (fractions share one).")


class SwarmConfig(ConfigModel):
    """One swarm: a queen, a health monitor and agent pools."""

    name: Name = Field(description="Swarm name (filled from the mapping key).")
    description: str = Field("", description="What the swarm is for.")
    queen: QueenConfig = Field(default_factory=QueenConfig, description="Queue and retry policy.")
    health: HealthConfig = Field(default_factory=HealthConfig, description="Health monitoring.")
    supervision: SupervisionConfig = Field(
        default_factory=SupervisionConfig, description="Restart strategy and intensity."
    )
    journal: JournalConfig = Field(default_factory=JournalConfig, description="Durable task journal.")
    delegation_breaker: CircuitBreakerConfig = Field(
        default_factory=CircuitBreakerConfig,
        description="Circuit breaker per swarm this one delegates to.",
    )
    memory: MemoryStoreConfig | None = Field(
        None, description="The swarm's own memory store (namespace: the swarm's name); None: none."
    )
    priority: int = Field(0, description="Tie-breaker when swarms offer the same capability: higher wins.")
    pools: dict[Name, AgentPoolConfig] = Field(description="Agent pools by name.")

    @field_validator("pools", mode="before")
    @classmethod
    def _pool_names(cls, v: Any) -> Any:
        return named(v)

    @model_validator(mode="after")
    def _has_pools(self) -> SwarmConfig:
        if not self.pools:
            raise ValueError("a swarm needs at least one agent pool")
        return self

    @property
    def capabilities(self) -> list[str]:
        """Capabilities offered by the swarm's agents, sorted."""
        return sorted({c for p in self.pools.values() for c in p.agent.capability_names})

    def capability_timeouts_s(self) -> dict[str, float]:
        """Per-capability default timeouts set in config."""
        return {
            c.name: c.timeout_s
            for p in self.pools.values()
            for c in p.agent.capabilities
            if c.timeout_s is not None
        }


class RegistryConfig(ConfigModel):
    """The meta registry: discovery, routing and delegation limits."""

    stale_after_s: PositiveFloat = Field(
        10.0, description="A swarm whose last heartbeat is older than this is not routed to."
    )
    max_hops: PositiveInt = Field(
        3, description="Times a task may be delegated between swarms before it fails."
    )
    route_cache_ttl_s: PositiveFloat = Field(
        2.0,
        description="Longest a queen reuses a route the registry gave it (one that load cannot "
        "move) before asking again; any change of the swarms drops it at once.",
    )
    journal_uri: str | None = Field(
        None,
        description="Local directory or fsspec URI below which the registry journals its "
        "key-value store, at <uri>/<namespace>/_registry; None is ~/.swarmray/journal.",
    )
    conflict_policy: Literal["least_loaded", "priority", "round_robin"] = Field(
        "least_loaded",
        description="How to pick among healthy swarms offering one capability "
        "(see ARCHITECTURE.md, 'Conflict resolution').",
    )
