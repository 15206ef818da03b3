"""The scopes an API key can hold. The keys themselves are in `serve/_private/auth/keys.py`; the
scopes sit at the bottom so that the `swarm` CLI names them in its help without importing
pydantic (which importing anything under `serve` does, through `serve/__init__.py`)."""

from __future__ import annotations

from typing import Literal

__all__ = ["SCOPES", "Scope"]

Scope = Literal["ai:invoke", "ai:embed", "facts:read", "facts:write", "usage:read", "mcp:call", "admin"]
SCOPES: tuple[str, ...] = Scope.__args__
