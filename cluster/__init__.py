"""The roof of swarmray: the system config, bring-up, the client and the `swarm` CLI.

Load a system with `load_config`, start it with `up`, talk to it with `Client`; the `swarm`
command (`python -m cluster`) does the same from a shell. Every exception swarmray raises on
purpose is importable from here too (the tree is drawn in `models/_private/core/errors.py`).
"""

from models._private.core import errors as _errors
from models._private.core.lazy import lazy_exports

# Imported on first use: `python -m cluster --help` imports this package and must not wait for Ray.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "models._private.core.errors": tuple(_errors.__all__),  # the exception tree, under its own __all__
        "cluster._private.client": ("Client", "unwrap"),
        "cluster._private.config": ("SystemConfig", "load_config"),
        "cluster._private.connection": ("connect",),
        "cluster._private.lifecycle": ("down", "up"),
        "cluster._private.status": ("status",),
    },
)

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
