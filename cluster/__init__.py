"""Configuration, bring-up and the client of a swarmray system.

Load a system with `load_config`, start it with `up`, talk to it with `Client`; the `swarm`
command (`python -m cluster`) does the same from a shell.
"""

from cluster._private.config import (
    AgentConfig,
    AgentPoolConfig,
    CapabilityConfig,
    CircuitBreakerConfig,
    HealthConfig,
    JournalConfig,
    QueenConfig,
    RegistryConfig,
    ResourcesConfig,
    SupervisionConfig,
    SwarmConfig,
    SystemConfig,
    load_config,
)
from cluster._private.errors import (
    BackendsUnavailableError,
    BackpressureError,
    ConfigError,
    DelegationError,
    EngineError,
    EngineUnavailableError,
    MemoryInputError,
    ModelNotFoundError,
    RequestError,
    SchedulingError,
    SwarmNotFoundError,
    SwarmrayError,
    SystemNotFoundError,
    TaskCancelledError,
    TaskError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    UnknownCapabilityError,
)

__all__ = [
    "AgentConfig",
    "AgentPoolConfig",
    "BackendsUnavailableError",
    "BackpressureError",
    "CapabilityConfig",
    "CircuitBreakerConfig",
    "Client",
    "ConfigError",
    "DelegationError",
    "EngineError",
    "EngineUnavailableError",
    "HealthConfig",
    "JournalConfig",
    "MemoryInputError",
    "ModelNotFoundError",
    "QueenConfig",
    "RegistryConfig",
    "RequestError",
    "ResourcesConfig",
    "SchedulingError",
    "SupervisionConfig",
    "SwarmConfig",
    "SwarmNotFoundError",
    "SwarmrayError",
    "SystemConfig",
    "SystemNotFoundError",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskTimeoutError",
    "UnknownCapabilityError",
    "connect",
    "down",
    "load_config",
    "status",
    "unwrap",
    "up",
]

_SYSTEM = {"Client", "connect", "down", "status", "unwrap", "up"}


def __getattr__(name: str):
    # The system layer imports `actors`, which imports this package's config; loading it on
    # first use keeps `import actors` and `import cluster` free of an import cycle.
    if name in _SYSTEM:
        from cluster._private import system

        return getattr(system, name)
    raise AttributeError(f"module 'cluster' has no attribute {name!r}")
