"""The audit chain: every kind of tampering is found at its place; an untouched log verifies."""

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from serve._private.auth.audit import AuditLog
from serve._private.auth.audit_verify import verify, verify_directory


class Clock:
    def __init__(self):
        self.now = 1_000.0

    def __call__(self):
        self.now += 0.001
        return self.now


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


def write(tmp_path, key, n=10, every=4):
    log = AuditLog(str(tmp_path), "gw-1", key, checkpoint_every=every, checkpoint_s=1e9, clock=Clock())
    for i in range(n):
        log.append({"kind": "request", "key_id": f"k{i % 3}", "route": "/v1/chat/completions", "status": 200})
    log.close()
    return log.path


def lines(path):
    return [json.loads(x) for x in open(path)]


def rewrite(path, entries):
    with open(path, "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in entries)


def test_an_untouched_log_verifies_and_every_record_is_signed_by_a_checkpoint(tmp_path, key):
    path = write(tmp_path, key)
    verdict = verify(path, key.public_key())
    assert verdict.ok and verdict.records == 10 and verdict.checkpoints == 3  # at 4, 8 and close
    assert verdict.unwitnessed == 0


def test_an_edited_field_is_found_at_its_line(tmp_path, key):
    path = write(tmp_path, key)
    entries = lines(path)
    entries[5]["status"] = 403  # line 6: seq 5 (line 5 is the first checkpoint)
    rewrite(path, entries)
    verdict = verify(path, key.public_key())
    assert (verdict.first_bad, verdict.reason) == (6, "seq 5 does not match its hash (edited)")


def _delete_second(entries):
    del entries[1]  # seq 2


def _swap_second_and_third(entries):
    entries[1], entries[2] = entries[2], entries[1]


@pytest.mark.parametrize("tamper", [_delete_second, _swap_second_and_third], ids=["delete", "swap"])
def test_a_deleted_or_reordered_record_is_found_where_the_sequence_breaks(tmp_path, key, tamper):
    path = write(tmp_path, key)
    entries = lines(path)
    tamper(entries)
    rewrite(path, entries)
    verdict = verify(path, key.public_key())
    assert verdict.first_bad == 2 and "expected seq 2, found 3" in verdict.reason


def test_an_inserted_record_is_found_even_with_a_plausible_seq(tmp_path, key):
    path = write(tmp_path, key)
    entries = lines(path)
    forged = {**entries[1], "key_id": "intruder"}  # claims seq 2, links to seq 1
    entries.insert(2, forged)
    rewrite(path, entries)
    verdict = verify(path, key.public_key())
    assert verdict.first_bad == 3  # the forgery's hash no longer matches its fields


def test_a_chain_rebuilt_after_an_edit_fails_at_the_next_checkpoint(tmp_path, key):
    """Recomputing every later hash hides an edit from the links, not from the signatures."""
    from serve._private.auth.audit import record_hash

    path = write(tmp_path, key)
    entries = lines(path)
    entries[6]["status"] = 500  # seq 6, between the checkpoints at seq 4 and 8
    prev = entries[6]["prev"]
    for e in entries[6:]:
        if "checkpoint" in e:
            break
        e["prev"] = prev
        e["hash"] = prev = record_hash(e)
    rewrite(path, entries)
    verdict = verify(path, key.public_key())
    assert verdict.first_bad == 10 and "after seq 4 were changed" in verdict.reason


def test_a_cut_tail_is_found_against_the_writers_signed_head(tmp_path, key):
    log = AuditLog(str(tmp_path), "gw-1", key, checkpoint_every=4, checkpoint_s=1e9, clock=Clock())
    for i in range(6):
        log.append({"kind": "request", "n": i})
    witness = log.checkpoint()  # what the live writer signs when asked: seq 6
    log.close()
    rewrite(log.path, lines(log.path)[:5])  # back to the checkpoint at seq 4: a valid, shorter chain
    assert verify(log.path, key.public_key()).ok  # offline, nothing signed says more existed
    verdict = verify(log.path, key.public_key(), witness=witness)
    assert verdict.first_bad == 6 and "is at seq 6; the file ends at 4 (cut)" in verdict.reason


def test_a_log_signed_with_another_key_fails_at_its_first_checkpoint(tmp_path, key):
    other = Ed25519PrivateKey.generate()
    path = write(tmp_path, other)
    verdict = verify(path, key.public_key())
    assert verdict.first_bad == 5 and "not signed by this key" in verdict.reason


def test_records_after_the_last_checkpoint_are_counted_as_unwitnessed(tmp_path, key):
    log = AuditLog(str(tmp_path), "gw-1", key, checkpoint_every=4, checkpoint_s=1e9, clock=Clock())
    for i in range(6):
        log.append({"n": i})
    log.flush()
    assert verify(log.path, key.public_key()).unwitnessed == 2


def test_a_reopened_log_continues_its_chain_and_cuts_a_torn_line(tmp_path, key):
    log = AuditLog(str(tmp_path), "gw-1", key, clock=Clock())
    log.append({"n": 1}, durable=True)
    log.close()
    with open(log.path, "ab") as f:
        f.write(b'{"seq": 3, "torn')  # a crash in the middle of a write
    again = AuditLog(str(tmp_path), "gw-1", key, clock=Clock())
    assert again.append({"n": 2})["seq"] == 2
    again.close()
    assert verify(again.path, key.public_key()).ok


def test_a_directory_verifies_every_writer_and_misses_none(tmp_path, key):
    for writer in ("gw-1", "gw-2"):
        log = AuditLog(str(tmp_path), writer, key, clock=Clock())
        log.append({"n": 1})
        log.close()
    witnesses = {"gw-3": {"checkpoint": {"writer": "gw-3", "seq": 1}}}
    verdicts = {v.writer: v for v in verify_directory(str(tmp_path), key.public_key(), witnesses)}
    assert verdicts["gw-1"].ok and verdicts["gw-2"].ok
    assert not verdicts["gw-3"].ok and "missing" in verdicts["gw-3"].reason


def test_durable_appends_are_on_disk_when_they_return(tmp_path, key):
    log = AuditLog(str(tmp_path), "gw-1", key, commit_window_s=60, clock=Clock())
    log.append({"kind": "admin", "action": "keys.create"}, durable=True)
    assert len(lines(log.path)) == 1  # written through, not left in the buffer
    log.append({"kind": "request"})  # group-committed: may wait in the buffer
    log.close()
    assert len(lines(log.path)) == 3  # the record and the closing checkpoint


def test_tail_and_search_merge_every_writer_by_time(tmp_path, key):
    from cluster._private.security import format_audit, parse_since
    from serve._private.auth.audit_verify import read_records as audit_records

    clock = Clock()
    for writer, key_id in (("ai-1", "key_a"), ("facts-1", "key_b"), ("ai-1", "key_b")):
        log = AuditLog(str(tmp_path), writer, key, clock=clock)
        log.append(
            {"kind": "request", "key_id": key_id, "method": "GET", "route": f"/v1/{writer}", "status": 200}
        )
        log.close()
    records = audit_records(str(tmp_path))
    assert [(r["writer"], r["key_id"]) for r in records] == [
        ("ai-1", "key_a"),
        ("facts-1", "key_b"),
        ("ai-1", "key_b"),
    ]
    assert [r["key_id"] for r in audit_records(str(tmp_path), key_id="key_b")] == ["key_b", "key_b"]
    assert [r["writer"] for r in audit_records(str(tmp_path), route="/v1/facts")] == ["facts-1"]
    assert audit_records(str(tmp_path), since=records[1]["time"]) == records[1:]
    assert "GET /v1/facts-1 -> 200 key=key_b" in format_audit(records)
    assert parse_since("15m", now=1000.0) == 100.0
    assert parse_since("2026-11-30T12:00:00Z") == 1796040000.0


def test_a_writer_signs_its_head_only_when_records_came_since_the_last_checkpoint(tmp_path, key):
    log = AuditLog(str(tmp_path), "gw-1", key, checkpoint_every=100, checkpoint_s=1e9, clock=Clock())
    assert log.checkpoint_if_new() is None  # nothing to sign yet
    log.append({"n": 1})
    log.append({"n": 2})
    head = log.checkpoint_if_new()
    assert head["checkpoint"]["seq"] == 2 and log.checkpoint_if_new() is head  # no second line
    log.close()
    assert sum("checkpoint" in e for e in lines(log.path)) == 1
    assert verify(log.path, key.public_key(), witness=head).ok


def test_a_check_since_a_time_starts_at_the_checkpoint_before_it(tmp_path, key):
    clock = Clock()
    log = AuditLog(str(tmp_path), "gw-1", key, checkpoint_every=4, checkpoint_s=1e9, clock=clock)
    for i in range(10):
        log.append({"kind": "request", "n": i})
    log.close()  # checkpoints at seq 4 (line 5), 8 (line 10) and 10 (line 13)
    entries = lines(log.path)
    since = entries[9]["checkpoint"]["time"] + 0.0001  # just after the checkpoint at seq 8
    entries[1]["n"] = 99  # seq 2, before it: vouched for by that checkpoint's signature
    rewrite(log.path, entries)
    assert not verify(log.path, key.public_key()).ok
    recent = verify(log.path, key.public_key(), since=since)
    assert recent.ok and recent.skipped == 8 and recent.records == 2 and recent.unwitnessed == 0
    entries[10]["n"] = 99  # seq 9, after it
    rewrite(log.path, entries)
    verdict = verify(log.path, key.public_key(), since=since)
    assert verdict.first_bad == 11 and "edited" in verdict.reason
    entries[9]["signature"] = entries[4]["signature"]  # the starting checkpoint itself forged
    rewrite(log.path, entries)
    assert verify(log.path, key.public_key(), since=since).first_bad == 10


def test_the_authority_keeps_only_heads_signed_with_the_systems_key(tmp_path):
    from serve._private.auth.authority import KeyAuthority
    from serve._private.auth.config import AuthConfig

    authority = KeyAuthority(str(tmp_path / "auth"), AuthConfig(path=str(tmp_path)).model_dump())
    log = AuditLog(str(tmp_path / "logs"), "gw-1", authority._signing, clock=Clock())
    log.append({"n": 1})
    real = log.checkpoint()
    forged = {"checkpoint": {**real["checkpoint"], "seq": 10**9}, "signature": real["signature"]}
    authority.witnessed(forged)  # would hide every later real head
    assert "gw-1" not in authority.witnesses()
    authority.witnessed(real)
    assert authority.witnesses()["gw-1"] == real
    # A forged head handed to verify is reported as unsigned, not as a cut.
    verdict = verify(log.path, authority._signing.public_key(), witness=forged)
    assert not verdict.ok and "not signed by this key" in verdict.reason


def test_the_audit_line_names_the_key_its_state_the_refusal_and_each_target(tmp_path, key):
    from cluster._private.security import format_audit

    base = {"writer": "ai-1", "time": 0.0, "method": "POST", "route": "/v1/search", "request_id": "r1"}
    refused = {**base, "kind": "refused", "target": None, "status": 401, "code": "invalid_api_key"}
    records = [
        {
            **base,
            "seq": 1,
            "kind": "request",
            "key_id": "key_a",
            "target": ["default", "demo"],
            "status": 200,
        },
        {**refused, "seq": 2, "key_id": "key_b", "key_state": "revoked"},
        {**refused, "seq": 3, "key_id": None, "key_state": "unknown"},
        {
            **refused,
            "seq": 4,
            "key_id": "key_a",
            "target": "secret",
            "status": 403,
            "code": "insufficient_permissions",
        },
    ]
    lines_ = [line.split("  ", 2)[2] for line in format_audit(records).splitlines()]  # after when, where
    assert lines_ == [
        "request  POST /v1/search [default, demo] -> 200 key=key_a id=r1",
        "refused  POST /v1/search -> 401 invalid_api_key key=key_b (revoked) id=r1",
        "refused  POST /v1/search -> 401 invalid_api_key key=unknown id=r1",
        "refused  POST /v1/search [secret] -> 403 insufficient_permissions key=key_a id=r1",
    ]


def _guarded_app(tmp_path, key, records):
    """A FastAPI app behind the guard as a gateway has it (no Ray): a route that checks the
    model in its body as the AI gateway's do."""
    from fastapi import FastAPI, Request

    from serve._private.auth import key_table
    from serve._private.auth.config import AuthConfig
    from serve._private.auth.key_table import KeyTableReplica
    from serve._private.auth.keys import KeyRecord, hash_key
    from serve._private.auth.leases import Spender
    from serve._private.auth.middleware import GuardMiddleware, ai_rule, allow
    from serve._private.http_errors import install_error_handlers

    app = FastAPI()
    app.add_middleware(GuardMiddleware, rule=ai_rule, service="unit-ai")
    install_error_handlers(app)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict:
        allow(request, model=(await request.json())["model"])
        return {}

    guard = KeyTableReplica("unit", AuthConfig(enabled=True, path=str(tmp_path)), "unit-ai-1")
    guard.audit = AuditLog(str(tmp_path / "audit"), "unit-ai-1", key, clock=Clock())
    guard.spender = Spender(None)  # no key here has limits: the authority is never asked
    guard.keys = {}
    for secret, fields in records.items():
        record = KeyRecord(hash=hash_key(secret), hint="x", created_at=0.0, **fields)
        guard.keys[record.hash] = record
    key_table._TABLES["unit-ai"] = guard
    return app, guard


def test_the_guard_audits_a_refused_key_by_its_id_and_every_refusal_alike(tmp_path, key):
    from fastapi.testclient import TestClient

    from serve._private.auth import key_table

    keys = {
        "sr-live": {"id": "key_live", "name": "l", "scopes": ["ai:invoke"], "models": ["m1"]},
        "sr-revoked": {"id": "key_gone", "name": "r", "scopes": ["ai:invoke"], "revoked_at": 1.0},
        "sr-expired": {"id": "key_old", "name": "e", "scopes": ["ai:invoke"], "expires_at": 1.0},
        "sr-embedder": {"id": "key_emb", "name": "x", "scopes": ["ai:embed"]},
    }
    app, guard = _guarded_app(tmp_path, key, keys)
    chat = {"model": "m2", "messages": []}
    try:
        with TestClient(app) as client:
            for secret in ("sr-revoked", "sr-expired", "sr-nobody", None):
                headers = {"Authorization": f"Bearer {secret}"} if secret else {}
                assert client.post("/v1/chat/completions", json=chat, headers=headers).status_code == 401
            bad_scope = client.post(
                "/v1/chat/completions", json=chat, headers={"Authorization": "Bearer sr-embedder"}
            )
            bad_model = client.post(
                "/v1/chat/completions", json=chat, headers={"Authorization": "Bearer sr-live"}
            )
            ok = client.post(
                "/v1/chat/completions",
                json={**chat, "model": "m1"},
                headers={"Authorization": "Bearer sr-live"},
            )
        assert (bad_scope.status_code, bad_model.status_code, ok.status_code) == (403, 403, 200)
    finally:
        key_table._TABLES.pop("unit-ai", None)
        guard.audit.close()
    got = [
        (e["kind"], e["status"], e.get("code"), e["key_id"], e.get("key_state"), e["target"])
        for e in lines(guard.audit.path)
        if "seq" in e
    ]
    assert got == [
        ("refused", 401, "invalid_api_key", "key_gone", "revoked", None),
        ("refused", 401, "invalid_api_key", "key_old", "expired", None),
        ("refused", 401, "invalid_api_key", None, "unknown", None),  # never the secret
        ("refused", 401, "invalid_api_key", None, "missing", None),
        ("refused", 403, "insufficient_permissions", "key_emb", None, None),  # the scope, in the guard
        ("refused", 403, "insufficient_permissions", "key_live", None, "m2"),  # the model, in the route
        ("request", 200, None, "key_live", None, "m1"),
    ]
    assert "sr-nobody" not in Path(guard.audit.path).read_text()


def test_verify_says_which_records_no_signature_covers_yet_and_what_that_means(tmp_path, key):
    from cluster._private.security import UNSIGNED_NOTE, format_verdicts

    log = AuditLog(str(tmp_path), "gw-1", key, checkpoint_every=4, checkpoint_s=1e9, clock=Clock())
    for i in range(6):
        log.append({"n": i})
    log.flush()
    (verdict,) = verify_directory(str(tmp_path), key.public_key())
    assert format_verdicts([verdict]).splitlines() == [
        "gw-1: 6 records, 1 checkpoints; ok (2 after its last signed head: chained, not yet signed)",
        UNSIGNED_NOTE,
    ]
    log.close()  # signs its head
    assert (
        format_verdicts(verify_directory(str(tmp_path), key.public_key()))
        == "gw-1: 6 records, 2 checkpoints; ok"
    )
    assert format_verdicts([]) == "no writer's log found"


def _guarded_facts(tmp_path, key, done):
    """A facts-like app behind the real guard and error handlers (no Ray): a DELETE that
    commits (sets `done`) and then fails, or waits on `hang` as a slow answer would."""
    import asyncio

    from fastapi import FastAPI

    from serve._private.auth import key_table
    from serve._private.auth.config import AuthConfig
    from serve._private.auth.key_table import KeyTableReplica
    from serve._private.auth.keys import KeyRecord, hash_key
    from serve._private.auth.leases import Spender
    from serve._private.auth.middleware import GuardMiddleware, facts_rule
    from serve._private.http_errors import install_error_handlers

    app = FastAPI()
    app.add_middleware(GuardMiddleware, rule=facts_rule, service="unit-facts")
    install_error_handlers(app)
    hang = asyncio.Event()

    @app.delete("/v1/namespaces/{namespace}/documents/{doc}")
    async def delete(namespace: str, doc: str) -> dict:
        done.set()  # the delete is committed here
        if doc == "boom":
            raise RuntimeError("after the commit")
        if doc == "slow":
            await hang.wait()  # the answer is slow: the client goes away meanwhile
        return {}

    guard = KeyTableReplica("unit", AuthConfig(enabled=True, path=str(tmp_path)), "unit-facts-1")
    guard.audit = AuditLog(str(tmp_path / "audit"), "unit-facts-1", key, commit_window_s=60, clock=Clock())
    guard.spender = Spender(None)
    record = KeyRecord(
        id="key_w",
        name="w",
        hash=hash_key("sr-w"),
        hint="x",
        scopes=["facts:read", "facts:write"],
        created_at=0.0,
    )
    guard.keys = {record.hash: record}
    key_table._TABLES["unit-facts"] = guard
    return app, guard


def _records(path):
    return [e for e in lines(path) if "seq" in e]


def test_a_write_that_fails_after_its_commit_is_audited_before_its_500_goes_out(tmp_path, key):
    import asyncio

    import httpx

    from serve._private.auth import key_table

    async def run():
        done = asyncio.Event()
        app, guard = _guarded_facts(tmp_path, key, done)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                r = await client.delete(
                    "/v1/namespaces/default/documents/boom", headers={"Authorization": "Bearer sr-w"}
                )
            on_disk = _records(guard.audit.path)  # read before close: the record must be fsync'ed
        finally:
            key_table._TABLES.pop("unit-facts", None)
            guard.audit.close()
        return r.status_code, on_disk

    status, on_disk = asyncio.run(run())
    assert status == 500
    assert [(e["method"], e["route"], e["status"], e["key_id"]) for e in on_disk] == [
        ("DELETE", "/v1/namespaces/default/documents/boom", 500, "key_w")
    ]


def test_a_write_whose_client_went_away_after_the_commit_is_audited(tmp_path, key):
    """Serve cancels a request's task when its client disconnects; the delete was done."""
    import asyncio

    from serve._private.auth import key_table

    async def run():
        done = asyncio.Event()
        app, guard = _guarded_facts(tmp_path, key, done)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "DELETE",
            "scheme": "http",
            "path": "/v1/namespaces/default/documents/slow",
            "raw_path": b"/v1/namespaces/default/documents/slow",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"authorization", b"Bearer sr-w"), (b"x-request-id", b"r-gone")],
            "server": ("t", 80),
            "client": ("c", 1),
        }
        forever = asyncio.Event()

        async def receive():
            if not done.is_set():
                return {"type": "http.request", "body": b"", "more_body": False}
            await forever.wait()

        sent = []

        async def send(message):
            sent.append(message)

        request = asyncio.create_task(app(scope, receive, send))
        try:
            await done.wait()
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
            on_disk = _records(guard.audit.path)  # durable: on disk, not in a buffer
        finally:
            key_table._TABLES.pop("unit-facts", None)
            guard.audit.close()
        return sent, on_disk

    sent, on_disk = asyncio.run(run())
    assert sent == []  # nothing was answered
    assert [(e["method"], e["status"], e["key_id"], e["request_id"]) for e in on_disk] == [
        ("DELETE", 499, "key_w", "r-gone")
    ]


def _authority(tmp_path, **config):
    from serve._private.auth.authority import KeyAuthority
    from serve._private.auth.config import AuthConfig

    return KeyAuthority(str(tmp_path / "auth"), AuthConfig(path=str(tmp_path), **config).model_dump())


def _public_pem(authority):
    return authority.public_key()


def test_a_cut_of_the_authoritys_own_chain_is_found_after_it_restarts(tmp_path):
    from cluster._private.security import verify_audit

    authority = _authority(tmp_path)
    for name in ("a", "b", "c"):
        authority.create({"name": name, "scopes": ["admin"]})
    path = authority.audit.path
    assert all(
        v.ok
        for v in verify_directory(
            authority.audit_directory(), authority._signing.public_key(), authority.witnesses()
        )
    )
    kept = lines(path)[:1]  # only the first key's record: the later two changes cut off
    rewrite(path, kept)
    again = _authority(tmp_path)  # restarted by Ray on the cut file
    verdicts = {
        v.writer: v
        for v in verify_directory(again.audit_directory(), again._signing.public_key(), again.witnesses())
    }
    assert not verdicts["authority"].ok
    again.create({"name": "d", "scopes": ["admin"]})  # new changes do not cover the cut up
    verdicts = {
        v.writer: v
        for v in verify_directory(again.audit_directory(), again._signing.public_key(), again.witnesses())
    }
    assert not verdicts["authority"].ok
    assert not all(v.ok for v in verify_audit(None, _public_pem(again), again.audit_directory()))


def test_a_key_added_to_the_key_journal_by_hand_is_not_loaded_and_verify_names_it(tmp_path):
    from cluster._private.security import verify_audit
    from models._private.core.journal import Journal
    from serve._private.auth.keys import KeyRecord, hash_key

    authority = _authority(tmp_path)
    made = authority.create({"name": "real", "scopes": ["facts:read"]})
    pem = _public_pem(authority)
    assert all(v.ok for v in verify_audit(None, pem, authority.audit_directory()))
    forged = KeyRecord(
        id="key_intruder", name="x", hash=hash_key("sr-mine"), hint="mine", scopes=["admin"], created_at=1.0
    )
    journal = Journal(str(tmp_path / "auth" / "keys"))
    journal.write_now({"record": forged.model_dump()})  # a valid frame: its CRC holds
    journal.close()
    again = _authority(tmp_path)
    assert again.live(hash_key("sr-mine")) is None  # not honoured
    assert again.live(hash_key(made["key"])) == made["record"]["id"]  # the real key still is
    verdicts = verify_audit(None, pem, again.audit_directory())
    bad = [v for v in verdicts if not v.ok]
    assert bad and "key_intruder" in bad[0].reason


def test_a_key_change_whose_audit_record_cannot_be_written_is_not_made(tmp_path):
    """The audit record goes first: a failure (or a crash) between the two leaves a record of a
    change not made, never a change without a record."""
    authority = _authority(tmp_path)
    authority.create({"name": "first", "scopes": ["admin"]})
    authority.audit._file.close()  # the audit file can no longer be written
    with pytest.raises(ValueError):
        authority.create({"name": "second", "scopes": ["admin"]})
    names = [e["record"]["name"] for e in authority.journal.read() if "record" in e]
    assert names == ["first"]


def test_a_flood_of_requests_without_a_key_writes_a_bounded_log_with_the_count_of_the_rest(tmp_path, key):
    from fastapi.testclient import TestClient

    from serve._private.auth import key_table
    from serve._private.auth.middleware import MAX_AUDIT_ROUTE

    app, guard = _guarded_app(tmp_path, key, {})
    guard.audit = AuditLog(
        str(tmp_path / "audit"), "unit-ai-1", key, clock=Clock(), refusals_per_window=20, refusal_window_s=60
    )
    long_path = "/v1/" + "x" * 16_000  # about what a server lets through in a request line
    try:
        with TestClient(app) as client:
            for _ in range(300):
                assert client.get(long_path).status_code == 401
    finally:
        key_table._TABLES.pop("unit-ai", None)
        guard.audit.close()  # ends the window: its summary is written
    size = Path(guard.audit.path).stat().st_size
    assert size < 20 * 2 * MAX_AUDIT_ROUTE + 10_000  # 300 full records were about 4.8 MB
    records = _records(guard.audit.path)
    refused = [r for r in records if r["kind"] == "refused"]
    assert len(refused) == 20 and all(len(r["route"]) <= MAX_AUDIT_ROUTE + 1 for r in refused)
    assert refused[0]["route_chars"] == len(long_path)
    (summary,) = [r for r in records if r["kind"] == "refusals_unrecorded"]
    assert summary["count"] == 280
    assert summary["counts"] == [{"status": 401, "code": "invalid_api_key", "key_id": None, "count": 280}]
    assert verify(guard.audit.path, key.public_key()).ok


def test_a_log_rotated_into_several_files_verifies_as_one_chain_and_reads_whole(tmp_path, key):
    from serve._private.auth.audit_verify import read_records

    log = AuditLog(str(tmp_path), "gw-1", key, checkpoint_s=1e9, clock=Clock(), rotate_bytes=2_000)
    for i in range(60):
        log.append({"kind": "request", "n": i})
    witness = log.checkpoint()
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) > 3 and "gw-1.jsonl" in files
    (verdict,) = verify_directory(str(tmp_path), key.public_key(), {"gw-1": witness})
    assert verdict.ok and verdict.records == 60 and verdict.unwitnessed == 0
    assert [r["n"] for r in read_records(str(tmp_path))] == list(range(60))
    again = AuditLog(str(tmp_path), "gw-1", key, clock=Clock(), rotate_bytes=2_000)
    assert again.append({"n": 60})["seq"] == 61  # the chain goes on after a restart
    again.close()
    assert verify_directory(str(tmp_path), key.public_key())[0].ok
    # The oldest files archived away: the rest is checked from the checkpoint it starts with.
    archive = tmp_path / "archive"
    archive.mkdir()
    for old in sorted(tmp_path.glob("gw-1.jsonl.*"))[:2]:
        old.rename(archive / old.name)
    (recent,) = verify_directory(str(tmp_path), key.public_key())
    assert recent.ok and recent.skipped > 0 and recent.skipped + recent.records == 61
    for old in archive.iterdir():
        old.rename(tmp_path / old.name)
    # An edit in an older file is found in that file.
    older = min(tmp_path.glob("gw-1.jsonl.*"))  # the first rotated away: seq 1 on
    entries = lines(older)
    entries[3]["n"] = 999
    rewrite(older, entries)
    (verdict,) = verify_directory(str(tmp_path), key.public_key())
    assert not verdict.ok and "edited" in verdict.reason and verdict.file == older.name
    from cluster._private.security import format_verdicts

    assert f"BAD at line 4 of {older.name}: seq" in format_verdicts([verdict])


def test_a_write_is_refused_with_503_while_its_audit_record_cannot_be_written_and_reads_go_on(
    tmp_path, key, caplog
):
    """The audit file on a full disk (/dev/full answers every write with ENOSPC)."""
    import asyncio
    import os

    import httpx

    from serve._private.auth import key_table

    directory = tmp_path / "audit"
    directory.mkdir()
    os.symlink("/dev/full", directory / "unit-facts-1.jsonl")

    async def run():
        done = asyncio.Event()
        app, guard = _guarded_facts(tmp_path, key, done)

        @app.get("/v1/namespaces/{namespace}/documents/{doc}")
        async def read(namespace: str, doc: str) -> dict:
            return {}

        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        auth = {"Authorization": "Bearer sr-w"}
        got = []
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                url = "/v1/namespaces/default/documents/ok"
                for method in ("DELETE", "GET", "DELETE"):
                    done.clear()
                    r = await client.request(method, url, headers=auth)
                    got.append((method, r.status_code, r.json().get("error", {}).get("code"), done.is_set()))
                os.replace(directory / "unit-facts-1.jsonl", directory / "gone")  # the disk has room again
                (directory / "unit-facts-1.jsonl").touch()
                done.clear()
                r = await client.delete(url, headers=auth)
                got.append(("DELETE", r.status_code, None, done.is_set()))
        finally:
            key_table._TABLES.pop("unit-facts", None)
            guard.audit.close()
        return got, guard

    got, guard = asyncio.run(run())
    assert got[:3] == [
        ("DELETE", 503, "audit_unavailable", True),  # found out after the commit: 503, never a silent 200
        ("GET", 200, None, False),  # reads go on
        ("DELETE", 503, "audit_unavailable", False),  # refused before the route
    ]
    assert got[3] == ("DELETE", 200, None, True)  # and writes go on once it can be written again
    records = _records(guard.audit.path)
    assert [(r["kind"], r.get("method"), r.get("status")) for r in records] == [
        ("audit_gap", None, None),  # what the chain could not hold meanwhile, said in it
        ("request", "DELETE", 200),
    ]
    assert records[0]["unrecorded"] == 3 and verify(guard.audit.path, key.public_key()).ok
    assert any("audit" in r.message and r.levelname == "ERROR" for r in caplog.records)


def test_keys_made_before_the_authoritys_chain_rotated_still_work_after_a_restart(tmp_path):
    from cluster._private.security import verify_audit
    from serve._private.auth.keys import hash_key

    authority = _authority(tmp_path, audit_rotate_bytes=1_000)
    made = [authority.create({"name": f"k{i}", "scopes": ["admin"]}) for i in range(6)]
    assert len(list((tmp_path / "auth" / "audit").glob("authority.jsonl.*"))) >= 2
    again = _authority(tmp_path, audit_rotate_bytes=1_000)
    assert [again.live(hash_key(m["key"])) for m in made] == [m["record"]["id"] for m in made]
    assert all(v.ok for v in verify_audit(None, again.public_key(), again.audit_directory()))


def test_a_key_journal_written_before_keys_were_bound_is_bound_once_at_start(tmp_path):
    """An upgrade: every key as it stands gets a `keys.bind` record, and works as before."""
    from cluster._private.security import verify_audit
    from models._private.core.journal import Journal
    from serve._private.auth.keys import KeyRecord, hash_key

    record = KeyRecord(
        id="key_old", name="old", hash=hash_key("sr-old"), hint="x", scopes=["admin"], created_at=1.0
    )
    journal = Journal(str(tmp_path / "auth" / "keys"))
    journal.write_now({"record": record.model_dump()})  # as journaled before: no audit record named
    journal.close()
    authority = _authority(tmp_path)
    assert authority.live(hash_key("sr-old")) == "key_old"
    assert [r["action"] for r in _records(authority.audit.path)] == ["keys.bind"]
    assert all(v.ok for v in verify_audit(None, authority.public_key(), authority.audit_directory()))
    _authority(tmp_path)  # and once only
    assert [r["action"] for r in _records(authority.audit.path)] == ["keys.bind"]
