"""The API keys `swarm up` provisions when auth is on: one for the user (a file only they can
read, which the CLI and the demo use) and one for the system's agents (in the registry)."""

from __future__ import annotations

import getpass
import os
from typing import Any

from actors._private.services import SERVICE_KEY_KEY
from cluster._private.connection import get
from models._private.core import env
from models._private.core.private_files import private_dir, write_private
from serve._private.auth.authority import get_authority
from serve._private.auth.config import AuthConfig
from serve._private.auth.keys import hash_key

__all__ = ["AGENT_SCOPES", "credentials_path", "provision", "user_key"]

AGENT_SCOPES = ["ai:invoke", "ai:embed", "facts:read", "facts:write"]


def credentials_path(system: str) -> str:
    """Where the user's key for `system` is kept: ~/.swarmray/credentials/<system>.key."""
    return os.path.join(os.path.expanduser("~"), ".swarmray", "credentials", f"{system}.key")


def user_key(system: str) -> str | None:
    """The user's key for `system`: $SWARMRAY_API_KEY, else the file `swarm up` wrote."""
    return env.api_key() or _stored_key(system)


def _stored_key(system: str) -> str | None:
    try:
        with open(credentials_path(system)) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def provision(system: str, auth: AuthConfig, registry: Any) -> dict[str, str]:
    """Makes sure the user and the agents hold live keys; returns {"user_key_path", "agents"}.

    The user's key (scope admin) is reused while it is live, else a new one is written to
    `credentials_path` (mode 0600). The agents' key is rotated when the registry has lost it
    (`swarm down` clears the registry), so that one `agents` key serves each system.
    """
    authority = get_authority(system, auth)
    path = credentials_path(system)
    existing = _stored_key(system)  # the file's, whatever $SWARMRAY_API_KEY says
    if existing is None or get(authority.live.remote(hash_key(existing))) is None:
        made = get(
            authority.create.remote({"name": f"{getpass.getuser()} (swarm up)", "scopes": ["admin"]}, "up")
        )
        private_dir(os.path.dirname(path))
        write_private(path, made["key"] + "\n")  # readable by the user only
    secret = get(registry.kv_get.remote(SERVICE_KEY_KEY))
    agents = secret and get(authority.live.remote(hash_key(secret)))
    if not agents:
        live = [r for r in get(authority.list.remote()) if r["name"] == "agents" and not r.get("revoked_at")]
        spec = {"name": "agents", "scopes": AGENT_SCOPES}
        made = get(
            authority.rotate.remote(live[0]["id"], "up") if live else authority.create.remote(spec, "up")
        )
        get(registry.kv_put.remote(SERVICE_KEY_KEY, made["key"]))
        agents = made["record"]["id"]
    return {"user_key_path": path, "agents": agents}
