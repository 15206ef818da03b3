"""Configuration: one pydantic model per concept, loaded from one YAML file.

A system is a Ray namespace holding one meta registry and any number of swarms. A swarm is a
queen, a health monitor and one or more agent pools; a pool is a set of identical agents (one
agent class) placed on Ray actors with the pool's resources.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from cluster._private import env
from cluster._private.errors import ConfigError

__all__ = [
    "AgentConfig",
    "AgentPoolConfig",
    "CapabilityConfig",
    "CircuitBreakerConfig",
    "HealthConfig",
    "JournalConfig",
    "MemoryStoreConfig",
    "QueenConfig",
    "RegistryConfig",
    "ResourcesConfig",
    "SupervisionConfig",
    "SwarmConfig",
    "SystemConfig",
    "import_object",
    "load_config",
]

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
CapabilityName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def import_object(path: str) -> Any:
    """Imports `package.module:Name` and returns the object."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{path!r} is not an import path of the form 'package.module:Name'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import module {module_name!r}: {e}") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


class ResourcesConfig(_Model):
    """What one Ray actor of a pool asks the scheduler for."""

    num_cpus: NonNegativeFloat | None = Field(
        None, description="Logical CPUs reserved per actor; None keeps Ray's actor default (0 while running)."
    )
    num_gpus: NonNegativeFloat = Field(
        0.0, description="GPUs per actor; a fraction below 1 lets actors share a GPU, above 1 must be whole."
    )
    accelerator_type: str | None = Field(
        None, description="Ray accelerator type the node must have, e.g. 'A100' or 'L4'."
    )
    memory_mb: PositiveInt | None = Field(
        None, description="Heap memory reserved per actor, in MiB (Ray's `memory` resource)."
    )
    custom: dict[str, PositiveFloat] = Field(
        default_factory=dict, description="Custom Ray resources per actor, e.g. {'edge': 1}."
    )

    @field_validator("num_gpus")
    @classmethod
    def _whole_above_one(cls, v: float) -> float:
        if v > 1 and not float(v).is_integer():
            raise ValueError(f"num_gpus above 1 must be a whole number, got {v}")
        return v

    @model_validator(mode="after")
    def _accelerator_needs_gpu(self) -> ResourcesConfig:
        if self.accelerator_type and self.num_gpus == 0:
            raise ValueError(
                f"accelerator_type ({self.accelerator_type!r}) needs num_gpus > 0 (num_gpus is 0)"
            )
        return self

    def ray_options(self) -> dict[str, Any]:
        """The keyword arguments for `ActorClass.options(...)`."""
        opts: dict[str, Any] = {}
        if self.num_cpus is not None:
            opts["num_cpus"] = self.num_cpus
        if self.num_gpus:
            opts["num_gpus"] = self.num_gpus
        if self.accelerator_type:
            opts["accelerator_type"] = self.accelerator_type
        if self.memory_mb:
            opts["memory"] = self.memory_mb * 1024 * 1024
        if self.custom:
            opts["resources"] = dict(self.custom)
        return opts


class CapabilityConfig(_Model):
    """A capability an agent offers: a dotted name tasks ask for."""

    name: CapabilityName = Field(description="Dotted capability name, e.g. 'text.stats'.")
    description: str = Field("", description="What the capability does, shown by `swarm status`.")
    timeout_s: PositiveFloat | None = Field(
        None, description="Default per-attempt timeout for tasks of this capability."
    )


class AgentConfig(_Model):
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
        from actors._private.agent import Agent  # actors imports this module; import late

        cls = import_object(self.class_path)
        if not (isinstance(cls, type) and issubclass(cls, Agent)):
            raise ValueError(f"{self.class_path!r} is not a subclass of actors.Agent")
        if not self.capabilities and not cls.capabilities:
            raise ValueError(f"no capabilities: set `capabilities` or define them on {self.class_path!r}")
        return self

    @property
    def capability_names(self) -> list[str]:
        """Capability names this agent offers."""
        if self.capabilities:
            return [c.name for c in self.capabilities]
        return list(import_object(self.class_path).capabilities)


class AgentPoolConfig(_Model):
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


class QueenConfig(_Model):
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


class HealthConfig(_Model):
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


class SupervisionConfig(_Model):
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


class CircuitBreakerConfig(_Model):
    """A breaker per remote backend: closed, open for a cool-down, then half-open with a probe."""

    failure_threshold: PositiveInt = Field(3, description="Consecutive failures that open the breaker.")
    cooldown_s: PositiveFloat = Field(
        10.0, description="Seconds an open breaker skips the backend before one probe is let through."
    )


class JournalConfig(_Model):
    """Where and how a queen journals its tasks."""

    uri: str | None = Field(
        None,
        description="Local directory or fsspec URI (s3://bucket/prefix, ...) of the journal; None "
        "is ~/.swarmray/journal/<namespace>/<swarm>. Must be shared storage on a multi-node "
        "cluster for a queen to recover on another node.",
    )
    sync: bool = Field(
        True, description="fdatasync each batch (survives a machine crash, not just a process crash)."
    )
    compact_after_mb: PositiveFloat = Field(
        64.0, description="Journal size that triggers compaction to the live tasks and results."
    )


class MemoryStoreConfig(_Model):
    """A swarm's memory store (or the global one): the memory and its upkeep."""

    namespaces: list[Name] = Field(
        default_factory=list, description="Namespaces it holds; empty means just its own name."
    )
    memory: Any = Field(
        default=None,
        validate_default=True,
        description="models.MemoryConfig: embedder, index kind, fusion, tiers, path.",
    )
    sweep_period_s: PositiveFloat = Field(30.0, description="Seconds between expiry/promotion sweeps.")
    snapshot_period_s: PositiveFloat = Field(300.0, description="Seconds between snapshots.")
    num_cpus: NonNegativeFloat = Field(0.0, description="Logical CPUs the store actor reserves.")
    num_gpus: NonNegativeFloat = Field(0.0, description="GPUs for the embedder (fractions share one).")

    @field_validator("memory", mode="before")
    @classmethod
    def _memory_config(cls, v: Any) -> Any:
        from models._private.memory import MemoryConfig  # models imports this module; import late

        return v if isinstance(v, MemoryConfig) else MemoryConfig.model_validate(v or {})


class SwarmConfig(_Model):
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
        return _named(v)

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


class RegistryConfig(_Model):
    """The meta registry: discovery, routing and delegation limits."""

    stale_after_s: PositiveFloat = Field(
        10.0, description="A swarm whose last heartbeat is older than this is not routed to."
    )
    max_hops: PositiveInt = Field(
        3, description="Times a task may be delegated between swarms before it fails."
    )
    journal_uri: str | None = Field(
        None,
        description="Where the registry journals its key-value store (local directory or fsspec "
        "URI); None is ~/.swarmray/journal/<namespace>/_registry.",
    )
    conflict_policy: Literal["least_loaded", "priority", "round_robin"] = Field(
        "least_loaded",
        description="How to pick among healthy swarms offering one capability "
        "(see ARCHITECTURE.md, 'Conflict resolution').",
    )


class SystemConfig(_Model):
    """A whole system: a Ray namespace with a registry and swarms."""

    namespace: Name = Field("swarmray", description="Ray namespace holding the system's actors.")
    registry: RegistryConfig = Field(default_factory=RegistryConfig, description="Meta registry.")
    control_resources: dict[str, PositiveFloat] = Field(
        default_factory=dict,
        description="Custom Ray resources the registry, queens and monitors ask for, e.g. "
        "{'control': 0.001}, to keep them on the nodes that offer it.",
    )
    swarms: dict[Name, SwarmConfig] = Field(description="Swarms by name.")
    global_memory: MemoryStoreConfig | None = Field(
        None, description="The `global` memory store every agent can reach; None: none."
    )
    ai: Any = Field(
        None,
        description="serve.AIServiceConfig: the OpenAI-compatible AI service `up` deploys on Ray "
        "Serve; None: no service.",
    )

    @field_validator("ai", mode="before")
    @classmethod
    def _ai_config(cls, v: Any) -> Any:
        if v is None:
            return None
        from serve._private.config import AIServiceConfig  # serve imports this module; import late

        return v if isinstance(v, AIServiceConfig) else AIServiceConfig.model_validate(v)

    @field_validator("swarms", mode="before")
    @classmethod
    def _swarm_names(cls, v: Any) -> Any:
        return _named(v)

    @model_validator(mode="after")
    def _has_swarms(self) -> SystemConfig:
        if not self.swarms:
            raise ValueError("a system needs at least one swarm")
        return self


def _named(v: Any) -> Any:
    # Mapping keys are the names; a `name` inside the value must agree.
    if not isinstance(v, dict):
        return v
    out = {}
    for key, item in v.items():
        if isinstance(item, dict):
            if "name" in item and item["name"] != key:
                raise ValueError(f"entry {key!r} has a different name {item['name']!r}")
            item = {**item, "name": key}
        out[key] = item
    return out


def _problems(err: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] not in {"missing", "extra_forbidden"} and "input" in e:
            shown = repr(e["input"])
            if len(shown) < 80 and shown not in msg:
                msg = f"{msg} (got {shown})"
        problems.append((path, msg))
    return problems


def load_config(source: str | Path | dict | None = None) -> SystemConfig:
    """Loads and validates a system configuration.

    Args:
        source: A YAML file path, an already parsed mapping, or None for SWARMRAY_CONFIG
            (default `configs/local.yaml`).

    Returns:
        The validated configuration, with SWARMRAY_NAMESPACE applied.

    Raises:
        ConfigError: The file is missing or unreadable, or a field is invalid; the message
            names the file, each field path and the reason.
    """
    if isinstance(source, dict):
        name, data = "<dict>", source
    else:
        path = Path(source or env.config_path())
        name = str(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as e:
            raise ConfigError(name, [("", f"cannot read file: {e.strerror}")]) from e
        except yaml.YAMLError as e:
            raise ConfigError(name, [("", f"not valid YAML: {e}")]) from e
    if not isinstance(data, dict):
        raise ConfigError(name, [("", f"top level must be a mapping, got {type(data).__name__}")])
    if ns := env.namespace():
        data = {**data, "namespace": ns}
    try:
        return SystemConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(name, _problems(e)) from e
