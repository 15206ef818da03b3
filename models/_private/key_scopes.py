"""The scopes an API key can hold, apart from `keys.py` so that the `swarm` CLI names them in
its help without importing pydantic."""

from __future__ import annotations

from typing import Literal

__all__ = ["SCOPES", "Scope"]

Scope = Literal["ai:invoke", "ai:embed", "facts:read", "facts:write", "usage:read", "admin"]
SCOPES: tuple[str, ...] = Scope.__args__
