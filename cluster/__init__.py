"""The roof of swarmray: the system config, bring-up, the client and the `swarm` CLI.

Load a system with `load_config`, start it with `up`, talk to it with `Client`; the `swarm`
command (`python -m cluster`) does the same from a shell.
"""

from cluster._private.client import Client, unwrap
from cluster._private.config import SystemConfig, load_config
from cluster._private.connection import connect
from cluster._private.lifecycle import down, up
from cluster._private.status import status
from models._private.core.errors import (
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
    "BackendsUnavailableError",
    "BackpressureError",
    "Client",
    "ConfigError",
    "DelegationError",
    "EngineError",
    "EngineUnavailableError",
    "MemoryInputError",
    "ModelNotFoundError",
    "RequestError",
    "SchedulingError",
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
