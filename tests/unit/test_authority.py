"""The key authority's upkeep, on the real classes (journals on disk, a replica's key table): a
replica is sent only what changed, lease grants share their fsyncs off the event loop, the
journals stay small, and keys retired long ago are forgotten everywhere."""

import asyncio
import os
import threading
from pathlib import Path

from serve._private.auth import authority as authority_module
from serve._private.auth.authority import RETIRED_KEPT_S, KeyAuthority
from serve._private.auth.config import AuthConfig
from serve._private.auth.key_table import KeyTableReplica


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def authority_in(tmp_path: Path, clock: Clock) -> KeyAuthority:
    return KeyAuthority(str(tmp_path / "auth"), AuthConfig(path=str(tmp_path)).model_dump(), clock=clock)


def replica_of(tmp_path: Path, authority: KeyAuthority) -> KeyTableReplica:
    table = KeyTableReplica("unit", AuthConfig(path=str(tmp_path)), "unit-ai-1")
    table._apply(asyncio.run(authority.changes(-1, 0)))  # its first sync: the whole table
    return table


def journal_bytes(tmp_path: Path) -> int:
    return sum(f.stat().st_size for f in (tmp_path / "auth").rglob("*.log"))


def test_a_replica_is_sent_only_the_keys_that_changed_since_its_version(tmp_path):
    authority = authority_in(tmp_path, Clock())
    made = [authority.create({"name": f"k{i}", "scopes": ["ai:invoke"]}) for i in range(5)]
    table = replica_of(tmp_path, authority)
    assert len(table.keys) == 5

    quiet = asyncio.run(authority.changes(table.version, 0.01))  # nothing changed: nothing sent
    assert quiet["keys"] == [] and not quiet["full"]
    authority.revoke(made[0]["record"]["id"])
    rotated = authority.rotate(made[1]["record"]["id"])
    delta = asyncio.run(authority.changes(table.version, 0))
    assert not delta["full"] and sorted(r["name"] for r in delta["keys"]) == ["k0", "k1"]
    table._apply(delta)
    assert table.identify(f"Bearer {made[0]['key']}")[1] == "revoked"
    assert table.identify(f"Bearer {made[1]['key']}")[1] == "unknown"  # the old secret is gone
    assert table.identify(f"Bearer {rotated['key']}")[1] == "live"
    assert table.identify(f"Bearer {made[2]['key']}")[1] == "live" and len(table.keys) == 5


def test_a_replica_behind_the_changes_kept_or_ahead_of_the_authority_gets_the_whole_table(tmp_path):
    authority = authority_in(tmp_path, Clock())
    for i in range(3):
        authority.create({"name": f"k{i}", "scopes": ["ai:invoke"]})
    restarted = authority_in(tmp_path, Clock())  # keeps no changes: all it can send is the table
    assert restarted.version == authority.version
    behind = asyncio.run(restarted.changes(1, 0))
    assert behind["full"] and len(behind["keys"]) == 3
    ahead = asyncio.run(restarted.changes(restarted.version + 5, 0))
    assert ahead["full"] and ahead["version"] == restarted.version


def test_lease_grants_share_their_fsyncs_and_never_sync_on_the_event_loop(tmp_path, monkeypatch):
    authority = authority_in(tmp_path, Clock())
    ids = [
        authority.create({"name": f"k{i}", "scopes": ["ai:invoke"], "budget_tokens": 1000})["record"]["id"]
        for i in range(20)
    ]
    synced_on: list[threading.Thread] = []
    real_fdatasync = os.fdatasync

    def fdatasync(fd):
        synced_on.append(threading.current_thread())
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)

    async def grants():
        return await asyncio.gather(*(authority.acquire(key_id, "budget", 10) for key_id in ids))

    assert all(g["units"] >= 10 for g in asyncio.run(grants()))
    assert 1 <= len(synced_on) <= 3  # 20 durable grants, one or two group commits
    assert threading.main_thread() not in synced_on


def test_the_journals_stay_small_and_still_count_after_a_restart(tmp_path, monkeypatch):
    monkeypatch.setattr(authority_module, "LIMITS_COMPACT_BYTES", 4096)
    clock = Clock()
    authority = authority_in(tmp_path, clock)
    key = authority.create(
        {"name": "b", "scopes": ["ai:invoke"], "budget_tokens": 100, "budget_period_s": 60}
    )
    key_id = key["record"]["id"]

    async def spend(authority, n):
        return (await authority.acquire(key_id, "budget", n))["units"]

    for _ in range(3000):  # a grant a second for 50 minutes
        clock.now += 1.0
        asyncio.run(spend(authority, 1))
    for _ in range(200):  # and a key rotated many times
        key = authority.rotate(key_id)
    assert journal_bytes(tmp_path) < 40_000  # 240 kB without compaction
    clock.now += 1.0
    assert asyncio.run(spend(authority, 100)) == 0  # the last minute's grants count
    again = authority_in(tmp_path, clock)
    assert asyncio.run(spend(again, 100)) == 0  # also after a restart
    assert again.version == authority.version
    assert again.keys[key_id].hash == authority.keys[key_id].hash


def test_a_key_retired_a_month_ago_is_forgotten_everywhere_after_its_record_is_audited(tmp_path):
    clock = Clock()
    authority = authority_in(tmp_path, clock)
    gone = authority.create({"name": "gone", "scopes": ["ai:invoke"]})
    kept = authority.create({"name": "kept", "scopes": ["ai:invoke"]})
    authority.revoke(gone["record"]["id"])
    table = replica_of(tmp_path, authority)
    assert table.identify(f"Bearer {gone['key']}")[1] == "revoked"  # audited by its id for now

    clock.now += RETIRED_KEPT_S + 3601
    table._apply(asyncio.run(authority.changes(table.version, 0)))
    assert table.identify(f"Bearer {gone['key']}")[1] == "unknown"
    assert table.identify(f"Bearer {kept['key']}")[1] == "live"
    assert [r["name"] for r in authority.list()] == ["kept"]
    audit = "".join(p.read_text() for p in (tmp_path / "auth" / "audit").glob("authority*"))
    assert '"keys.forget"' in audit and gone["record"]["id"] in audit
    again = authority_in(tmp_path, clock)
    assert [r["name"] for r in again.list()] == ["kept"] and again.version == authority.version
