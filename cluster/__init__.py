"""The roof of swarmray: the system config, bring-up, the client and the `swarm` CLI.

Load a system with `load_config`, start it with `up`, talk to it with `Client`; the `swarm`
command (`python -m cluster`) does the same from a shell. Every exception swarmray raises on
purpose is importable from here too (the tree is drawn in `models/_private/core/errors.py`).
"""

from cluster._private.client import Client, unwrap
from cluster._private.config import SystemConfig, load_config
from cluster._private.connection import connect
from cluster._private.lifecycle import down, up
from cluster._private.status import status
from models._private.core import errors as _errors
from models._private.core.errors import *  # noqa: F403  the exception tree, under its own __all__

__all__ = [
    "Client",
    "SystemConfig",
    "connect",
    "down",
    "load_config",
    "status",
    "unwrap",
    "up",
]
__all__ += _errors.__all__
