"""One replica's copy of the system's key table: the keys by the SHA-256 of their secret, kept
by a long poll of the key authority (`KeyAuthority.changes`) so that a request asks nobody (the
lookup is one dict access), with the replica's audit chain and its quota leases. The middleware
finds it here by service name, as does every route that needs the key (`key_of`)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from models._private.core.errors import AuditUnavailableError
from serve._private.auth.audit import AuditLog
from serve._private.auth.config import AuthConfig
from serve._private.auth.keys import KeyRecord, hash_key
from serve._private.auth.leases import Spender

__all__ = ["KeyState", "KeyTableReplica", "install_key_table", "key_of", "key_table_of"]

log = logging.getLogger("swarmray.serve")

KeyState = Literal["live", "revoked", "expired", "missing", "unknown"]


class KeyTableReplica:
    """One replica's copy of the key table, kept by a long poll of the key authority
    (`KeyAuthority.changes`), with its audit chain and its quota leases.

    Args:
        system: The system (Ray namespace) whose key authority to follow.
        config: The services' AuthConfig.
        writer: This replica's name in the audit log.
    """

    def __init__(self, system: str, config: AuthConfig, writer: str):
        self.system, self.config, self.writer = system, config, writer
        self.keys: dict[str, KeyRecord] = {}  # by hash of the secret
        self._hashes: dict[str, str] = {}  # key id -> its hash in `keys`
        self.version = -1
        self.audit: AuditLog | None = None
        self._ready: asyncio.Lock | None = None
        self._tasks: list[asyncio.Task] = []
        self.spender: Spender | None = None

    async def ready(self) -> None:
        """Loads the key table and the signing key once, then follows the authority."""
        if self.audit is not None:
            return
        self._ready = self._ready or asyncio.Lock()
        async with self._ready:
            if self.audit is not None:
                return
            import ray

            from models._private.core.names import authority_name

            authority = ray.get_actor(authority_name(self.system), namespace=self.system)
            self.spender = Spender(authority)
            self._apply(await authority.changes.remote(-1, 0))
            key = Ed25519PrivateKey.from_private_bytes(await authority.signing_key.remote())
            directory = await authority.audit_directory.remote()
            self.audit = self.config.audit_log(directory, self.writer, key)
            self._tasks = [
                asyncio.create_task(self._follow(authority)),
                asyncio.create_task(self._flush()),
                asyncio.create_task(self._witness(authority)),
            ]

    def _apply(self, table: dict[str, Any]) -> None:
        """Takes the authority's answer (`KeyAuthority.changes`): the whole table, or the changes
        since this replica's version (a rotated key's old hash goes, a forgotten key goes)."""
        keys = {} if table["full"] else dict(self.keys)
        hashes = {} if table["full"] else dict(self._hashes)
        for fields in table["keys"]:
            record = KeyRecord.model_validate(fields)
            keys.pop(hashes.get(record.id, ""), None)
            keys[record.hash], hashes[record.id] = record, record.hash
        for key_id in table.get("forgot", []):
            keys.pop(hashes.pop(key_id, ""), None)
        self.keys, self._hashes, self.version = keys, hashes, table["version"]

    async def _follow(self, authority: Any) -> None:
        while True:
            try:
                self._apply(await authority.changes.remote(self.version, self.config.sync_timeout_s))
            except Exception as e:  # the authority restarting: keep the last table, ask again
                log.warning("key table sync failed: %r", e)
                await asyncio.sleep(self.config.sync_timeout_s)

    async def _flush(self) -> None:
        failing = False
        while True:  # group commit: nothing waits longer than the window for its fsync
            await asyncio.sleep(self.config.audit_commit_window_s)
            try:
                await asyncio.to_thread(self.audit.flush)
            except AuditUnavailableError as e:  # said once; writes are refused until it heals
                if not failing:
                    log.error("audit log cannot be written; writes are refused meanwhile: %s", e)
                failing = True
                continue
            if failing:
                log.warning("audit log written again (its audit_gap record counts what was lost)")
            failing = False

    async def _witness(self, authority: Any) -> None:
        # The authority keeps this chain's latest signed head, so that a cut in the file shows.
        reported = None
        while True:
            await asyncio.sleep(self.config.audit_checkpoint_s)
            try:
                head = await asyncio.to_thread(self.audit.checkpoint_if_new)
            except AuditUnavailableError:
                continue  # the flush loop says so
            if head is not None and head is not reported:
                try:
                    await authority.witnessed.remote(head)
                    reported = head
                except Exception as e:  # the authority restarting: send the next one
                    log.warning("audit head not witnessed: %r", e)

    def identify(self, authorization: str | None) -> tuple[KeyRecord | None, KeyState]:
        """The key a bearer header carries, live or not, and its state: "live", "revoked" or
        "expired" with its record; "missing" (no bearer header) or "unknown" (a secret no key
        has) with None. The table keeps revoked keys, so that their requests are audited by id."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None, "missing"
        record = self.keys.get(hash_key(authorization[7:].strip()))
        if record is None:
            return None, "unknown"
        if record.revoked_at is not None:
            return record, "revoked"
        return record, "live" if record.live(time.time()) else "expired"

    def authenticate(self, authorization: str | None) -> KeyRecord | None:
        """The live key a bearer header carries, or None."""
        record, state = self.identify(authorization)
        return record if state == "live" else None


_TABLES: dict[str, KeyTableReplica] = {}  # service -> this process's table (a replica is a process)


def install_key_table(service: str, table: KeyTableReplica) -> None:
    """Makes `table` this replica's key table of `service`."""
    _TABLES[service] = table


def key_table_of(service: str) -> KeyTableReplica | None:
    """This replica's key table of `service`, or None when auth is off."""
    return _TABLES.get(service)


def key_of(request: Any) -> KeyRecord | None:
    """The key a request came with (None when auth is off)."""
    return getattr(request.state, "key", None)
