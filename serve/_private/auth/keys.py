"""API keys: how they are made, stored (as hashes only) and checked against a request.

A key is `sr-` followed by 43 URL-safe characters of `secrets.token_urlsafe(32)` (256 random
bits), so that it is recognisable in a leak scan and cannot be guessed. What is stored is its
SHA-256: a slow password hash (bcrypt, argon2) protects low-entropy secrets from guessing,
which a 256-bit random key does not need, and a fast hash keeps the check off the request's
critical path (GitHub and Stripe store tokens the same way). The record keeps the key's first
eight characters after the prefix for people to tell keys apart in lists and logs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import secrets

from pydantic import Field

from models._private.core.config import ConfigModel
from models._private.core.scopes import SCOPES, Scope

__all__ = [
    "PREFIX",
    "SCOPES",
    "KeyRecord",
    "denial",
    "hash_key",
    "hint_of",
    "matches_any",
    "new_key",
]

PREFIX = "sr-"


def new_key() -> str:
    """A fresh secret key."""
    return PREFIX + secrets.token_urlsafe(32)


def hint_of(key: str) -> str:
    """What lists and logs show of a key: its first eight characters after the prefix."""
    return key[len(PREFIX) : len(PREFIX) + 8]


def hash_key(key: str) -> str:
    """What is stored of a key, and what a presented key is looked up by."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRecord(ConfigModel):
    """One key as stored: never the secret itself."""

    id: str = Field(description="Stable id, shown in lists, usage and the audit log.")
    name: str = Field(description="What the key is for, given at creation.")
    hash: str = Field(description="SHA-256 of the secret, hex.")
    hint: str = Field(description="The secret's first characters after the prefix.")
    scopes: list[Scope] = Field(description="What the key may do; admin has every scope.")
    models: list[str] | None = Field(None, description="Models it may use, whatever its scopes; None: all.")
    namespaces: list[str] | None = Field(
        None, description="Facts namespaces it may use, whatever its scopes; None: all."
    )
    swarms: list[str] | None = Field(
        None,
        description="Swarms (fnmatch patterns) whose capabilities and memory it may use over MCP; None: all.",
    )
    capabilities: list[str] | None = Field(
        None,
        description="MCP tools (fnmatch patterns over capability and tool names, e.g. 'text.*') it "
        "may see and call; None: all.",
    )

    @property
    def limited(self) -> bool:
        """Whether a model, namespace, swarm or capability list narrows what the key sees."""
        return any(x is not None for x in (self.models, self.namespaces, self.swarms, self.capabilities))

    rpm: int | None = Field(None, ge=1, description="Requests per minute; None: unlimited.")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute; None: unlimited.")
    budget_tokens: int | None = Field(None, ge=1, description="Tokens per budget period; None: no budget.")
    budget_usd: float | None = Field(
        None, gt=0, description="US dollars per budget period, priced by the AI service's `prices`."
    )
    budget_period_s: float | None = Field(
        None, gt=0, description="Length of a budget period in seconds (both budgets; default a day)."
    )
    created_at: float = Field(description="Unix time of creation.")
    expires_at: float | None = Field(None, description="Unix time after which it stops working.")
    revoked_at: float | None = Field(None, description="Unix time it was revoked, if it was.")

    def matches(self, key: str) -> bool:
        """Whether `key` is this key's secret (in constant time)."""
        return hmac.compare_digest(self.hash, hash_key(key))

    def live(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


def denial(
    record: KeyRecord, scope: str | None, *, model: str | None = None, namespace: str | None = None
) -> str | None:
    """Why `record` may not act in `scope` (None: any) on `model` / `namespace`, or None when
    it may. An admin key has every scope; its model and namespace lists, if it has them, bind
    it as they bind any key (an admin of a tenant's namespaces)."""
    if scope is not None and scope not in record.scopes and "admin" not in record.scopes:
        return f"this key lacks the scope {scope}"
    if model is not None and record.models is not None and model not in record.models:
        return f"this key may not use the model {model!r}"
    if namespace is not None and record.namespaces is not None and namespace not in record.namespaces:
        return f"this key may not use the namespace {namespace!r}"
    return None


def matches_any(patterns: list[str] | None, name: str) -> bool:
    """Whether `name` matches one of the fnmatch `patterns` (case-sensitive); None matches all."""
    return patterns is None or any(fnmatch.fnmatchcase(name, p) for p in patterns)
