"""Configuration of API keys and the audit trail, shared by the AI service and the facts service."""

from __future__ import annotations

import ipaddress
import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field, PositiveFloat, PositiveInt

from models._private.core.config import ConfigModel
from models._private.core.journal import journal_location
from serve._private.auth.audit import AuditLog

__all__ = ["LOOPBACK", "AuthConfig", "check_auth_host", "is_loopback"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class AuthConfig(ConfigModel):
    """Who may call a service, and the audit log of what they did.

    Keys and their limits live in one Ray actor per system (the key authority), which every
    gateway replica follows; each replica appends its own chain to the audit log.
    """

    enabled: bool = Field(
        True,
        description="Every route demands a key (Authorization: Bearer); false is allowed only "
        "while Serve listens on loopback.",
    )
    path: str | None = Field(
        None,
        description="Local directory of the keys' journal, the signing key and the audit logs; "
        "None: ~/.swarmray/journal/<system namespace>/_auth.",
    )
    audit_checkpoint_every: PositiveInt = Field(
        1000, description="Audit records a writer appends between two signed checkpoints."
    )
    audit_checkpoint_s: PositiveFloat = Field(
        10.0, description="Longest time between two signed checkpoints while records arrive."
    )
    audit_commit_window_s: PositiveFloat = Field(
        0.05,
        description="Longest an inference request's audit record waits for its fsync (group "
        "commit); admin and write actions wait for theirs before they are answered.",
    )
    audit_refusals_per_window: PositiveInt = Field(
        100,
        description="Refusals (401, 403, 429) a writer records whole per window; the rest are "
        "counted by status, code and key in one record at the window's end, so that requests "
        "without a key cannot fill the disk.",
    )
    audit_refusal_window_s: PositiveFloat = Field(60.0, description="That window's length.")
    audit_rotate_bytes: PositiveInt = Field(
        64 * 2**20,
        description="A writer's file is renamed <writer>.jsonl.<last seq> at the first checkpoint "
        "past this size, and the chain goes on in a new one (`swarm audit verify` walks them in "
        "order; older ones may be archived away).",
    )
    sync_timeout_s: PositiveFloat = Field(
        0.5,
        description="How long a replica's long poll for key changes waits; a revoked key stops "
        "working on every replica within about this long after the authority acknowledges.",
    )

    def audit_log(self, directory: str, writer: str, key: Ed25519PrivateKey) -> AuditLog:
        """`writer`'s chain in the audit `directory`, checkpointed and committed as configured."""
        return AuditLog(
            directory,
            writer,
            key,
            self.audit_checkpoint_every,
            self.audit_checkpoint_s,
            self.audit_commit_window_s,
            refusals_per_window=self.audit_refusals_per_window,
            refusal_window_s=self.audit_refusal_window_s,
            rotate_bytes=self.audit_rotate_bytes,
        )

    def directory(self, system: str) -> str:
        """The directory of the system's keys, signing key and audit logs."""
        root = journal_location(None, system, "_auth") if self.path is None else self.path
        return os.path.abspath(os.path.expanduser(root))


def is_loopback(host: str | None) -> bool:
    """Whether `host` is a loopback name or address (127.0.0.0/8, ::1, localhost); None (which
    makes Serve's HAProxy bind every interface) is not."""
    if host is None:
        return False
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_auth_host(auth: AuthConfig, host: str) -> None:
    """Auth may be off only where nobody but this machine reaches the service."""
    if not auth.enabled and not is_loopback(host):
        raise ValueError(
            f"auth.enabled false is allowed only while Serve listens on loopback, not {host!r}: "
            "anyone who reaches the port could use the service"
        )
