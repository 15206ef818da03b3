"""The key authority: one Ray actor per system that owns the API keys and the audit signing key.

It is the single place keys change. Every change is journaled (fsync'ed) and audited (a
durable record in the authority's own chain) before it is acknowledged, then published: gateway
replicas hold a long poll (`changes`) open, so a revoked key stops working on each of them
within about `sync_timeout_s` of `revoke` returning. Secrets are returned once, at creation or
rotation, and never stored.

The actor is detached and restarted by Ray; it rebuilds its state from the journal. Its
directory also holds the Ed25519 signing key (mode 0600), which replicas fetch to sign their
own audit checkpoints, `audit/`, the writers' chains, and `heads.json`, the latest checkpoint
each writer sent here: the witnesses a chain cut short is found against.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections import OrderedDict
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from models._private.core.errors import KeyNotFoundError, KeyStateError, ModelNotFoundError
from models._private.core.journal import Journal
from models._private.core.names import authority_name
from models._private.core.private_files import private_dir, write_private
from models._private.core.usage import Spent, UsageLedger
from serve._private.auth.audit import signed_by
from serve._private.auth.config import AuthConfig
from serve._private.auth.keys import KeyRecord, hash_key, hint_of, new_key
from serve._private.auth.quota import PERSISTED, Ledger, limit_of, period_of

__all__ = [
    "KeyAuthority",
    "get_authority",
    "load_signing_key",
]

log = logging.getLogger("swarmray.serve")
SIGNING_KEY = "signing.key"
HEADS = "heads.json"
SERVED_MODELS = "models.json"  # the names the system's AI service answers to, as it last said
USAGE_COMPACT_BYTES = 4 * 2**20  # the usage journal is rewritten as its ledger past this size
KEPT_BATCH_IDS = 100_000  # usage batch ids remembered against duplicates (~a day of one replica)


def load_signing_key(directory: str) -> Ed25519PrivateKey:
    """The system's audit signing key, made on first use (readable by its owner only)."""
    path = os.path.join(private_dir(directory), SIGNING_KEY)
    if not os.path.exists(path):
        write_private(path, Ed25519PrivateKey.generate().private_bytes_raw())
    with open(path, "rb") as f:
        return Ed25519PrivateKey.from_private_bytes(f.read())


class KeyAuthority:
    """Keys of one system: create, list, revoke, rotate, and the feed replicas follow.

    Args:
        directory: Where the journal, the signing key and the audit logs live.
        config: The AuthConfig, dumped.
        system: The system (Ray namespace) it serves, a tag of its journals' metrics.
    """

    def __init__(self, directory: str, config: dict[str, Any], system: str = "-"):
        self.config = AuthConfig.model_validate(config)
        self.directory = directory
        self._signing = load_signing_key(directory)
        self.journal = Journal(os.path.join(directory, "keys"), system=system)
        self.keys: dict[str, KeyRecord] = {}
        self.ledger = Ledger()
        entries = self.journal.read()
        for entry in entries:
            if "spent" in entry:  # units of a budget window granted before a restart
                self.ledger.restore(*entry["spent"])
                continue
            record = KeyRecord.model_validate(entry["record"])
            self.keys[record.id] = record
        # One per key change, so it only grows, also across restarts.
        self.version = sum(1 for e in entries if "record" in e)
        self._changed = asyncio.Event()
        self.audit = self.config.audit_log(self.audit_directory(), "authority", self._signing)
        heads = os.path.join(directory, HEADS)
        self.heads: dict[str, dict[str, Any]] = {}  # writer -> its latest signed checkpoint
        if os.path.exists(heads):
            with open(heads) as f:
                self.heads = json.load(f)
        served = os.path.join(directory, SERVED_MODELS)
        self.served_models: list[str] | None = None  # None: no AI service has said yet
        if os.path.exists(served):
            with open(served) as f:
                self.served_models = json.load(f)
        # What the gateways' replicas charged, by key and model; batches they sent, by id, so a
        # batch Ray delivers twice (a retried call) counts once.
        self.usage = UsageLedger(("key", "model"))
        self.batches: OrderedDict[str, None] = OrderedDict()
        self.usage_journal = Journal(os.path.join(directory, "usage"), system=system)
        self._usage_base = 0  # the usage journal's size after its last compaction
        self._writing: dict[str, dict[str, Any]] = {}  # batch id -> its entry, being appended
        for entry in self.usage_journal.read():
            if entry["k"] == "led":
                self.usage.load(entry["rows"])
                self.batches = OrderedDict.fromkeys(entry["batches"])
            else:
                self._count_batch(entry)

    def audit_directory(self) -> str:
        return os.path.join(self.directory, "audit")

    # -- changes (each durable and audited before it is answered) --------------------------

    def create(self, spec: dict[str, Any], actor: str = "cli") -> dict[str, Any]:
        """A new key from `spec` (KeyRecord's fields but id, hash, hint and times, plus
        `expires_in_s`); returns {"record", "key"}: the secret, shown this once.

        Raises:
            ModelNotFoundError: `models` names one the system's AI service does not serve
                (checked once an AI service has said what it serves: `set_served_models`).
                Namespaces are not checked: a facts namespace is made by its first write.
        """
        spec = dict(spec)
        served = self.served_models
        if served is not None and (unknown := [m for m in spec.get("models") or [] if m not in served]):
            raise ModelNotFoundError(unknown[0], served)
        expires_in = spec.pop("expires_in_s", None)
        key, now = new_key(), time.time()
        record = KeyRecord(
            **spec,
            id="key_" + secrets.token_hex(6),
            hash=hash_key(key),
            hint=hint_of(key),
            created_at=now,
            expires_at=now + expires_in if expires_in else None,
        )
        self._store(record, actor, "keys.create")
        return {"record": record.model_dump(exclude={"hash"}), "key": key}

    def revoke(self, key_id: str, actor: str = "cli") -> dict[str, Any]:
        """Stops the key at once on every replica; its record stays, marked revoked."""
        record = self._get(key_id)
        if record.revoked_at is None:
            record = record.model_copy(update={"revoked_at": time.time()})
            self._store(record, actor, "keys.revoke")
        return record.model_dump(exclude={"hash"})

    def rotate(self, key_id: str, actor: str = "cli") -> dict[str, Any]:
        """A new secret for the key (same id, scopes and limits); the old secret stops."""
        record = self._get(key_id)
        if not record.live(time.time()):
            raise KeyStateError(f"key {key_id} is revoked or expired; create a new one")
        key = new_key()
        record = record.model_copy(update={"hash": hash_key(key), "hint": hint_of(key)})
        self._store(record, actor, "keys.rotate")
        return {"record": record.model_dump(exclude={"hash"}), "key": key}

    def set_served_models(self, names: list[str]) -> None:
        """Keeps the names the system's AI service answers to (`AIServiceConfig.model_names`),
        which a new key's model list must come from; the service's deployment calls it."""
        self.served_models = sorted(names)
        write_private(os.path.join(self.directory, SERVED_MODELS), json.dumps(self.served_models))

    def _store(self, record: KeyRecord, actor: str, action: str) -> None:
        self.journal.write_now({"record": record.model_dump()})
        self.audit.append(
            {"kind": "admin", "action": action, "key_id": record.id, "actor": actor}, durable=True
        )
        self.keys[record.id] = record
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def _get(self, key_id: str) -> KeyRecord:
        if key_id not in self.keys:
            raise KeyNotFoundError(key_id)
        return self.keys[key_id]

    # -- limits (the one ledger every replica's leases come from) ---------------------------

    def acquire(self, key_id: str, counter: str, n: int, force: bool = False) -> dict[str, Any]:
        """Grants `n` or more units of `counter` in the current window (see `quota`), or
        none ({"units": 0, "retry_after_s"}) when fewer than `n` are left; `force` grants `n`
        over the limit (usage beyond what a request reserved)."""
        record = self._get(key_id)
        limit = limit_of(record, counter)
        if limit is None:
            return {"units": n, "window": 0, "tight": False, "retry_after_s": 0.0, "unlimited": True}
        period_s = period_of(record, counter)
        grant = self.ledger.acquire(key_id, counter, limit, period_s, n, time.time(), force)
        if counter in PERSISTED and grant.units:  # a budget outlives a restart: journal it
            used = self.ledger.used(key_id, counter, grant.window)
            self.journal.write_now({"spent": [key_id, counter, grant.window, used]})
        return vars(grant)

    def release(self, key_id: str, counter: str, window: int, n: int) -> None:
        """Units of `window` a replica did not spend."""
        self.ledger.release(key_id, counter, window, n)

    # -- reads ------------------------------------------------------------------------------

    def live(self, key_hash: str) -> str | None:
        """The id of the live key with this hash, if there is one."""
        now = time.time()
        return next((r.id for r in self.keys.values() if r.hash == key_hash and r.live(now)), None)

    def list(self) -> list[dict[str, Any]]:
        """Every key's record, without its hash."""
        return [r.model_dump(exclude={"hash"}) for r in self.keys.values()]

    async def changes(self, version: int, timeout_s: float) -> dict[str, Any]:
        """The key table once it is newer than `version` (or after `timeout_s` as it is):
        {"version", "keys": [records with hashes]}. Replicas call it in a loop."""
        if version >= self.version:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass
        return {"version": self.version, "keys": [r.model_dump() for r in self.keys.values()]}

    def signing_key(self) -> bytes:
        """The audit signing key, for a gateway replica's own chain (never leaves Ray)."""
        return self._signing.private_bytes_raw()

    def public_key(self) -> str:
        """The audit log's Ed25519 public key, PEM."""
        return (
            self._signing.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
        )

    # -- the usage ledger -------------------------------------------------------------------

    async def record_usage(self, batch: dict[str, Any]) -> None:
        """Counts a replica's batch {"id", "at", "rows": [[key id, model, Spent fields]]},
        durably before it returns; a batch id seen before is ignored."""
        if batch["id"] in self.batches or batch["id"] in self._writing:
            return  # counted, or being written for a call Ray delivered before
        entry = {"k": "use", **batch}
        self._writing[batch["id"]] = entry
        try:
            await self.usage_journal.append(entry)
        finally:
            del self._writing[batch["id"]]
        self._count_batch(entry)
        # Rewritten as its ledger once past the limit and doubled since the last time.
        if self.usage_journal.size_bytes() > max(USAGE_COMPACT_BYTES, 2 * self._usage_base):
            await self.usage_journal.rewrite(self._usage_base_entries)
            self._usage_base = self.usage_journal.size_bytes()

    def _usage_base_entries(self) -> list[dict[str, Any]]:
        # A compaction runs right after a write, before that write's callers count their
        # batches: those are carried over whole, to be counted on replay.
        led = {"k": "led", "rows": self.usage.dump(), "batches": list(self.batches)}
        return [led, *self._writing.values()]

    def _count_batch(self, entry: dict[str, Any]) -> None:
        if entry["id"] in self.batches:
            return
        for key_id, model, spent in entry["rows"]:
            self.usage.add(entry["at"], (key_id, model), Spent.model_validate(spent))
        self.batches[entry["id"]] = None
        while len(self.batches) > KEPT_BATCH_IDS:
            self.batches.popitem(last=False)

    def usage_totals(
        self, by: list[str], since: float | None = None, key: str | None = None
    ) -> list[dict[str, Any]]:
        """What the AI service charged, grouped by `by` (of key, model), since a time, of one
        key (its id) if given."""
        rows = self.usage.totals(by, since, None if key is None else {"key": key})
        if "key" in by:  # the key's name beside its id
            for row in rows:
                row["name"] = self.keys[row["key"]].name if row["key"] in self.keys else None
        return rows

    def witnessed(self, checkpoint: dict[str, Any]) -> None:
        """Keeps a writer's latest signed checkpoint, away from the writer's own file (one not
        signed with the system's key is ignored, so that it cannot hide later real heads)."""
        if not signed_by(self._signing.public_key(), checkpoint):
            log.warning("an audit head not signed with the system's key was ignored")
            return
        writer, seq = checkpoint["checkpoint"]["writer"], checkpoint["checkpoint"]["seq"]
        if seq >= self.heads.get(writer, {}).get("checkpoint", {}).get("seq", -1):
            self.heads[writer] = checkpoint
            write_private(os.path.join(self.directory, HEADS), json.dumps(self.heads))

    def witnesses(self) -> dict[str, dict[str, Any]]:
        """Every writer's latest checkpoint, and the authority's own head signed now."""
        return {**self.heads, "authority": self.audit.checkpoint()}


def get_authority(system: str, config: AuthConfig, resources: dict[str, float] | None = None) -> Any:
    """The system's key authority actor, started (detached, restarted by Ray) if none runs;
    `resources`: custom Ray resources it asks for (control_resources), to stay where they are."""
    import ray

    return (
        ray.remote(KeyAuthority)
        .options(
            name=authority_name(system),
            namespace=system,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=-1,
            num_cpus=0,
            resources=dict(resources or {}),
        )
        .remote(config.directory(system), config.model_dump(), system)
    )
