"""The key authority: one Ray actor per system that owns the API keys and the audit signing key.

It is the single place keys change. Every change is audited (a durable record in the
authority's own chain, first) and journaled (fsync'ed, naming that record: `key_binding`, so a
key added to the journal by hand is not honoured) before it is acknowledged, then published: gateway
replicas hold a long poll (`changes`) open, so a revoked key stops working on each of them
within about `sync_timeout_s` of `revoke` returning. A replica is sent the changes since the
version it holds (the whole table on its first call, or when it fell further behind than the
changes kept). Secrets are returned once, at creation or rotation, and never stored. A key
revoked or expired more than RETIRED_KEPT_S ago is forgotten (audited, dropped from the table and
the journal): a request with it is then an unknown key's.

The actor is detached and restarted by Ray; it rebuilds its state from its journals: `keys` (the
key records, compacted as keys are forgotten or records pile up) and `limits` (the units each
limit's slots granted, group-committed, compacted past LIMITS_COMPACT_BYTES). Its
directory also holds the Ed25519 signing key (mode 0600), which replicas fetch to sign their
own audit checkpoints, `audit/`, the writers' chains, and `heads.json`, the latest checkpoint
each writer sent here, and the authority's own, kept after each change: the witnesses a chain
cut short is found against (the authority's own on its next start, too).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from models._private.core.errors import KeyNotFoundError, KeyStateError, ModelNotFoundError
from models._private.core.journal import Journal
from models._private.core.metrics import safely
from models._private.core.names import authority_name
from models._private.core.private_files import private_dir, write_private
from models._private.core.usage import Spent, UsageLedger
from serve._private.auth.audit import signed_by
from serve._private.auth.config import AuthConfig
from serve._private.auth.key_binding import AUTHORITY, chain_records, record_digest, unbound_keys
from serve._private.auth.keys import KeyRecord, hash_key, hint_of, new_key
from serve._private.auth.quota import SLOTS, Grant, Ledger, limit_of, period_of, window_of
from serve._private.metrics import authority_metrics

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
LIMITS_COMPACT_BYTES = 2**20  # the limits journal is rewritten as the slots that count past this
KEPT_CHANGES = 1000  # key changes kept for replicas' catch-up; one further behind gets the table
RETIRED_KEPT_S = 30 * 86400.0  # how long a revoked or expired key is still known (audited by id)
_SWEEP_S = 3600.0  # how often retired keys are looked for
KEPT_BATCH_IDS = 100_000  # usage batch ids remembered against duplicates (~a day of one replica)
BUDGETS = {"budget": "tokens", "cost": "usd"}  # limit counters shown as a budget's used share
_BUDGETS_SHOWN_S = 10.0  # how often every budget's share is recomputed (older slots age out)


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
        clock: The time limits and keys' lives are counted by (a test's fake clock).
    """

    def __init__(
        self,
        directory: str,
        config: dict[str, Any],
        system: str = "-",
        clock: Callable[[], float] = time.time,
    ):
        self.config = AuthConfig.model_validate(config)
        self.clock = clock
        self.directory = directory
        self.system = system
        self._signing = load_signing_key(directory)
        self.journal = Journal(os.path.join(directory, "keys"), system=system)
        self.keys: dict[str, KeyRecord] = {}
        self.ledger = Ledger()
        # One per key change, so it only grows, also across restarts (a compacted journal
        # starts with the version it had).
        self.version = 0
        self._records = 0  # key records in the keys journal
        self._bound: dict[str, str] = {}  # key id -> the audit record its latest state names
        legacy = []  # grants journaled here before the limits journal existed
        entries = self.journal.read()
        for entry in entries:
            if "spent" in entry:
                legacy.append(entry)
            elif "version" in entry:
                self.version = entry["version"]
            elif "forgot" in entry:
                self.keys.pop(entry["forgot"], None)
                self.version += 1
            else:
                record = KeyRecord.model_validate(entry["record"])
                self.keys[record.id] = record
                if "audit" in entry:
                    self._bound[record.id] = entry["audit"]
                self.version += 1
                self._records += 1
        self.limits = Journal(os.path.join(directory, "limits"), system=system)
        if legacy and not self.limits.size_bytes():  # moved, before the keys journal drops them
            self.limits.write_now(*legacy)
        for entry in self.limits.read():
            self.ledger.restore(*entry["spent"])
        self._limits_base = 0  # the limits journal's size after its last compaction
        self.limits.expect_compaction_at(LIMITS_COMPACT_BYTES)
        self._budgets_shown: set[tuple[str, str]] = set()  # (key id, counter) with a gauge
        self._budgets_at = -math.inf  # when every budget's share was last recomputed
        # (version, record or {"forgot": id}) of the latest changes, for replicas' catch-up.
        self._changes: deque[tuple[int, dict[str, Any]]] = deque(maxlen=KEPT_CHANGES)
        self._swept = -math.inf
        self._changed = asyncio.Event()
        self.audit = self.config.audit_log(self.audit_directory(), "authority", self._signing)
        heads = os.path.join(directory, HEADS)
        self.heads: dict[str, dict[str, Any]] = {}  # writer -> its latest signed checkpoint
        if os.path.exists(heads):
            with open(heads) as f:
                self.heads = json.load(f)
        self.chain_cut = self._check_chain(entries)
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
        self.usage_journal.expect_compaction_at(USAGE_COMPACT_BYTES)
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
        key, now = new_key(), self.clock()
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
            record = record.model_copy(update={"revoked_at": self.clock()})
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
        # The record first: a crash between the two leaves a record of a change not made, never
        # a change with no record; the journal entry names it, which binds the key (key_binding).
        dump = record.model_dump()
        audit = self.audit.append(
            {
                "kind": "admin",
                "action": action,
                "key_id": record.id,
                "actor": actor,
                "record_sha256": record_digest(dump),
            },
            durable=True,
        )
        self.journal.write_now({"record": dump, "audit": audit["hash"]})
        self._keep_own_head()
        self.keys[record.id] = record
        self._bound[record.id] = audit["hash"]
        self._records += 1
        self._publish({"record": record.model_dump()})
        if self._records > max(64, 2 * len(self.keys)):  # mostly superseded records: compact
            self._compact_keys()

    def _publish(self, change: dict[str, Any]) -> None:
        self.version += 1
        self._changes.append((self.version, change))
        self._changed.set()
        self._changed = asyncio.Event()

    def _compact_keys(self) -> None:
        # All the keys journal's writes are synchronous, on this loop: nothing is in flight.
        # Each keeps the audit record its state names, so it stays bound (key_binding).
        records = [{"record": r.model_dump(), "audit": self._bound[r.id]} for r in self.keys.values()]
        self.journal.rewrite_now({"version": self.version - len(records)}, *records)
        self._records = len(records)

    def forget_retired(self) -> list[str]:
        """Forgets the keys revoked or expired more than RETIRED_KEPT_S ago: each is audited
        (`keys.forget`), then dropped from the table, its limits' counts and the journal, and
        replicas are told. Returns their ids. Runs at most hourly from `changes`."""
        now = self.clock()
        retired = [
            r.id
            for r in self.keys.values()
            if (r.revoked_at is not None and r.revoked_at < now - RETIRED_KEPT_S)
            or (r.revoked_at is None and r.expires_at is not None and r.expires_at < now - RETIRED_KEPT_S)
        ]
        for key_id in retired:
            self.journal.write_now({"forgot": key_id})
            self.audit.append(
                {"kind": "admin", "action": "keys.forget", "key_id": key_id, "actor": "authority"},
                durable=True,
            )
            del self.keys[key_id]
            self.ledger.forget(key_id)
            self._publish({"forgot": key_id})
        if retired:
            self._compact_keys()
        return retired

    def _get(self, key_id: str) -> KeyRecord:
        if key_id not in self.keys:
            raise KeyNotFoundError(key_id)
        return self.keys[key_id]

    # -- limits (the one ledger every replica's leases come from) ---------------------------

    async def acquire(
        self, key_id: str, counter: str, n: int, force: bool = False, stale: list[int] | None = None
    ) -> dict[str, Any]:
        """Grants `n` or more units of `counter` in the current window (see `quota`), or
        none ({"units": 0, "retry_after_s"}) when fewer than `n` are left; `force` grants `n`
        over the limit (usage beyond what a request reserved). `stale` ([slot, units]) is the
        unspent rest of the asking replica's lease whose slot ended, released first. A grant is
        journaled before it is answered (group-committed, off the event loop), so that a restart
        counts the leases replicas still hold."""
        if stale:
            self.ledger.release(key_id, counter, *stale)
        record = self._get(key_id)
        limit = limit_of(record, counter)
        if limit is None:
            return {**vars(Grant(n, 0, False, 0.0, 0.0)), "unlimited": True}
        period_s = period_of(record, counter)
        grant = self.ledger.acquire(key_id, counter, limit, period_s, n, self.clock(), force)
        if grant.units:
            used = self.ledger.used(key_id, counter, grant.window)
            await self.limits.append({"spent": [key_id, counter, grant.window, used]})
            # Rewritten as the slots that still count once past the limit and doubled since.
            if self.limits.size_bytes() > max(LIMITS_COMPACT_BYTES, 2 * self._limits_base):
                await self.limits.rewrite(lambda: [{"spent": row} for row in self.ledger.dump(self.clock())])
                self._limits_base = self.limits.size_bytes()
                self.limits.expect_compaction_at(max(LIMITS_COMPACT_BYTES, 2 * self._limits_base))
        self._show_budget(record, counter)
        return vars(grant)

    def release(self, key_id: str, counter: str, window: int, n: int) -> None:
        """Units of `window` a replica did not spend."""
        self.ledger.release(key_id, counter, window, n)
        if key_id in self.keys:
            self._show_budget(self.keys[key_id], counter)

    def _show_budget(self, record: KeyRecord, counter: str) -> None:
        """Sets the gauge of the share of a key's budget that counts now (0 for a key that can
        no longer spend: a revoked key near its budget needs no one's attention)."""
        limit = limit_of(record, counter)
        if counter not in BUDGETS or limit is None:
            return
        used = 0.0
        if record.live(self.clock()):
            slot = window_of(self.clock(), period_of(record, counter))
            # The slots the ledger counts against the limit: this one and the SLOTS before it.
            used = sum(self.ledger.used(record.id, counter, s) for s in range(slot - SLOTS, slot + 1)) / limit
        self._budgets_shown.add((record.id, counter))
        safely(lambda: authority_metrics(self.system).budget(record.id, BUDGETS[counter], used))

    def show_budgets(self) -> None:
        """Recomputes every budget's share (units age out of the window with no grant to say
        so); a key forgotten since shows 0. Runs at most every _BUDGETS_SHOWN_S from `changes`."""
        self._budgets_at = self.clock()
        for key_id, counter in list(self._budgets_shown):
            if key_id not in self.keys:
                self._budgets_shown.discard((key_id, counter))
                safely(lambda k=key_id, c=counter: authority_metrics(self.system).budget(k, BUDGETS[c], 0.0))
        for record in list(self.keys.values()):
            for counter in BUDGETS:
                self._show_budget(record, counter)

    # -- reads ------------------------------------------------------------------------------

    def live(self, key_hash: str) -> str | None:
        """The id of the live key with this hash, if there is one."""
        now = time.time()
        return next((r.id for r in self.keys.values() if r.hash == key_hash and r.live(now)), None)

    def list(self) -> list[dict[str, Any]]:
        """Every key's record, without its hash."""
        return [r.model_dump(exclude={"hash"}) for r in self.keys.values()]

    async def changes(self, version: int, timeout_s: float) -> dict[str, Any]:
        """What changed in the key table since `version`, once something has (or after
        `timeout_s`): {"version", "full": False, "keys": [changed records, with hashes],
        "forgot": [ids]}; or the whole table ({"full": True, "keys"}) for a replica that has
        none yet (`version` -1), is further behind than the changes kept, or is ahead (an
        authority that lost its state). Replicas call it in a loop."""
        if self.clock() - self._swept > _SWEEP_S:
            self._swept = self.clock()
            self.forget_retired()
        if self.clock() - self._budgets_at > _BUDGETS_SHOWN_S:
            self.show_budgets()
        if 0 <= version == self.version:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass
        oldest = self._changes[0][0] if self._changes else self.version + 1
        if version < 0 or version > self.version or oldest > version + 1:
            return {
                "version": self.version,
                "full": True,
                "keys": [r.model_dump() for r in self.keys.values()],
            }
        changed = [change for v, change in self._changes if v > version]
        records = {c["record"]["id"]: c["record"] for c in changed if "record" in c}  # the latest of each
        forgot = [c["forgot"] for c in changed if "forgot" in c]
        return {"version": self.version, "full": False, "keys": list(records.values()), "forgot": forgot}

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
            self.usage_journal.expect_compaction_at(max(USAGE_COMPACT_BYTES, 2 * self._usage_base))

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
        """Every writer's latest checkpoint, and the authority's own head signed now (or, if its
        chain was found cut at start, the head it had signed before: `chain_cut`)."""
        self._keep_own_head()
        return dict(self.heads)

    def _keep_own_head(self) -> None:
        # The authority's own head is kept beside the others' (heads.json, outside its file),
        # so that a cut of its file is found when it starts again; never over a cut found.
        if self.chain_cut is None:
            self.heads[AUTHORITY] = self.audit.checkpoint()
            write_private(os.path.join(self.directory, HEADS), json.dumps(self.heads))

    def _check_chain(self, entries: list[dict[str, Any]]) -> str | None:
        """At start: whether the authority's chain still holds the head it last kept (a cut or
        rewrite of its file says why; `verify` then fails on it), and which keys no record of
        the chain vouches for, which are not loaded. A journal written before keys were bound
        (no entry names its record) is bound once, by a record of each key as it stands."""
        chain = chain_records(self.audit_directory())
        kept, cut = self.heads.get(AUTHORITY, {}).get("checkpoint"), None
        if kept is not None:
            at = next((r for r in chain.values() if r["seq"] == kept["seq"]), None)
            if at is None or at["hash"] != kept["head"]:
                cut = (
                    f"the authority's audit chain ends at seq {self.audit.seq} but it had signed "
                    f"seq {kept['seq']} (its file was cut or rewritten)"
                )
                log.error("%s; `swarm audit verify` reports it", cut)
        if not any("audit" in e for e in entries if "record" in e):
            for record in list(self.keys.values()):
                self._bind(record)
            return cut
        for key_id in unbound_keys(entries, chain):
            log.error("key %s has no audit record of its latest change; it is not honoured", key_id)
            self.keys.pop(key_id, None)
        return cut

    def _bind(self, record: KeyRecord) -> None:
        dump = record.model_dump()
        fields = {"kind": "admin", "action": "keys.bind", "key_id": record.id, "actor": "authority"}
        audit = self.audit.append({**fields, "record_sha256": record_digest(dump)}, durable=True)
        self.journal.write_now({"record": dump, "audit": audit["hash"]})
        self._bound[record.id] = audit["hash"]
        self._records += 1


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
