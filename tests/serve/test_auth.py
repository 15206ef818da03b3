"""Keys, scopes and the audit trail on both services, over real HTTP: the key authority is a
real Ray actor, the gateways real Serve replicas, the audit log real files verified with the
authority's public key."""

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import ray
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from serve import AIServiceConfig, FactsServiceConfig, deploy
from serve._private.auth.audit_verify import verify_directory
from serve._private.auth.authority import get_authority
from serve._private.auth.config import AuthConfig
from serve._private.auth.keys import SCOPES
from tests.scripted_provider import ScriptedProvider, tool_call
from tests.waiting import wait_until

SYSTEM = "auth-test"
PLAIN = [s for s in SCOPES if s != "admin"]


@pytest.fixture(scope="module")
def auth(tmp_path_factory):
    return AuthConfig(
        enabled=True, path=str(tmp_path_factory.mktemp("auth")), sync_timeout_s=0.2, audit_checkpoint_s=1.0
    )


@pytest.fixture(scope="module")
def authority(ray_head, auth):
    handle = get_authority(SYSTEM, auth)
    yield handle
    ray.kill(handle)


@pytest.fixture(scope="module")
def keys(authority):
    """name -> secret, one key per kind of caller."""
    specs = {
        "admin": {"scopes": ["admin"]},
        "reader": {"scopes": ["facts:read"]},
        "writer": {"scopes": ["facts:read", "facts:write"], "namespaces": ["open"]},
        "invoker": {"scopes": ["ai:invoke"], "models": ["scripted"]},
        "usage": {"scopes": ["usage:read"]},
        "tenant": {"scopes": ["admin"], "namespaces": ["open"], "models": ["scripted"]},
        "revoked": {"scopes": ["admin"]},
        # Every scope but admin, on one namespace and two models: what a route's object check
        # lets through, and refuses for any other.
        "limited": {"scopes": PLAIN, "namespaces": ["open"], "models": ["scripted", "all-MiniLM-L6-v2"]},
        **{f"lacks {s}": {"scopes": [p for p in PLAIN if p != s]} for s in SCOPES},
        # Made before the services start, so that every replica knows them from its first request.
        "rpm": {"scopes": ["facts:read"], "rpm": 7},
        "budget": {"scopes": ["ai:invoke"], "budget_tokens": 850, "budget_period_s": 86400.0},
        "dollars": {"scopes": ["ai:invoke"], "budget_usd": 1.6},
        "three streams": {"scopes": ["ai:invoke"], "budget_tokens": 450},
        "small budget": {"scopes": ["ai:invoke"], "budget_tokens": 100},
        "tool loop": {"scopes": ["ai:invoke"], "rpm": 3},
    }
    made = {name: ray.get(authority.create.remote({"name": name, **spec})) for name, spec in specs.items()}
    ray.get(authority.revoke.remote(made["revoked"]["record"]["id"]))
    return {name: m["key"] for name, m in made.items()}


@pytest.fixture(scope="module")
def facts(serve_port, auth, authority, tmp_path_factory):
    config = FactsServiceConfig(
        port=serve_port,
        route_prefix="/facts-auth",
        path=str(tmp_path_factory.mktemp("facts")),
        namespaces={"open": {"extractor": "spacy"}, "secret": {"extractor": "none"}},
        ingress_replicas=2,  # limits must hold across replicas
        auth=auth,
    )
    url = deploy(config, app_name="facts-auth", system=SYSTEM)
    yield url
    from ray import serve

    serve.delete("facts-auth")


SECRET_ARGUMENT = "the-argument-nobody-may-log"  # in every tool call the provider makes
SECRET_RESULT = "a-tool-result-nobody-may-log"


def answer(body):
    """The scripted provider's answer: a tool call when offered tools, else "hello"."""
    if body.get("tools"):
        return {"content": None, "tool_calls": [tool_call("lookup", {"query": SECRET_ARGUMENT})]}
    return "hello"


@pytest.fixture(scope="module")
def ai(serve_port, auth, authority):
    provider = ScriptedProvider()
    provider.respond = answer
    config = AIServiceConfig(
        port=serve_port,
        route_prefix="/ai-auth",
        providers={
            "scripted": {"base_url": provider.url, "model": "m"},
            "other": {"base_url": provider.url, "model": "m"},
        },
        ingress_replicas=2,
        auth=auth,
        # A token of "scripted" costs 2,000 micro-dollars either way (the cost test's unit).
        prices={"scripted": {"input_usd_per_million_tokens": 2000, "output_usd_per_million_tokens": 2000}},
    )
    url = deploy(config, app_name="ai-auth", system=SYSTEM)
    yield url
    from ray import serve

    serve.delete("ai-auth")
    provider.close()


def call(url, method, path, key=None, body=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, url + path, headers=headers, json=body, timeout=60)


DOC = {"id": "d1", "title": "Ada", "text": "Ada Lovelace wrote the first program."}
FACT = [{"subject": "Ada Lovelace", "predicate": "wrote", "object": "the first program"}]
# Every route of both services: service, method, path, body, the scope it needs. `{ns}` is the
# namespace and `{model}` the model the request is about (None: the route names neither);
# `{doc}`, `{fact}`, … are objects made for it by `objects`.
ROUTES = [
    ("facts", "GET", "/namespaces", None, "facts:read"),
    ("facts", "GET", "/namespaces/{ns}", None, "facts:read"),
    ("facts", "POST", "/namespaces/{ns}/documents", {"id": "posted", "text": "Posted."}, "facts:write"),
    (
        "facts",
        "POST",
        "/namespaces/{ns}/documents/batch",
        {"documents": [{"text": "Batched."}]},
        "facts:write",
    ),
    ("facts", "GET", "/namespaces/{ns}/documents/{doc}", None, "facts:read"),
    ("facts", "DELETE", "/namespaces/{ns}/documents/{doomed_doc}", None, "facts:write"),
    ("facts", "GET", "/namespaces/{ns}/jobs/{job}", None, "facts:read"),
    ("facts", "POST", "/namespaces/{ns}/facts", {"facts": FACT}, "facts:write"),
    ("facts", "GET", "/namespaces/{ns}/facts?predicate=wrote", None, "facts:read"),
    ("facts", "GET", "/namespaces/{ns}/facts/{fact}", None, "facts:read"),
    ("facts", "DELETE", "/namespaces/{ns}/facts/{doomed_fact}", None, "facts:write"),
    ("facts", "POST", "/namespaces/{ns}/facts/{fact}/invalidate", {}, "facts:write"),
    ("facts", "GET", "/namespaces/{ns}/entities?name=Ada%20Lovelace", None, "facts:read"),
    ("facts", "GET", "/namespaces/{ns}/entities/{ada}", None, "facts:read"),
    ("facts", "GET", "/namespaces/{ns}/entities/{ada}/neighbours", None, "facts:read"),
    ("facts", "GET", "/namespaces/{ns}/entities/{ada}/path/{program}", None, "facts:read"),
    ("facts", "POST", "/namespaces/{ns}/entities/{fan}/merge", {"other": "{fan2}"}, "facts:write"),
    (
        "facts",
        "POST",
        "/namespaces/{ns}/entities/{ada}/split",
        {"documents": ["{doc}"], "name": "A. L."},
        "facts:write",
    ),
    (
        "facts",
        "POST",
        "/search",
        {"query": "Who wrote the first program?", "namespaces": ["{ns}"]},
        "facts:read",
    ),
    ("facts", "GET", "/audit", None, "admin"),
    ("ai", "GET", "/models", None, "ai:invoke"),
    (
        "ai",
        "POST",
        "/chat/completions",
        {"model": "{model}", "messages": [{"role": "user", "content": "hi"}]},
        "ai:invoke",
    ),
    (
        "ai",
        "POST",
        "/chat/completions",
        {
            "model": "{model}",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": None, "tool_calls": [tool_call("lookup", {"query": "q"})]},
                {"role": "tool", "tool_call_id": "call_scripted", "content": "found"},
            ],
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        },
        "ai:invoke",
    ),
    ("ai", "POST", "/completions", {"model": "{model}", "prompt": "hi", "max_tokens": 5}, "ai:invoke"),
    ("ai", "POST", "/embeddings", {"model": "{embedder}", "input": "hi"}, "ai:embed"),
    ("ai", "GET", "/usage", None, "usage:read"),
    ("ai", "GET", "/backends", None, "admin"),
    ("ai", "GET", "/audit", None, "admin"),
]
OURS = {"ns": "open", "model": "scripted", "embedder": "all-MiniLM-L6-v2"}
THEIRS = {"ns": "secret", "model": "other", "embedder": "other"}


def fill(template, values):
    """`template` (a path or a JSON body) with its {placeholders} replaced."""
    text = json.dumps(template)
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return json.loads(text)


@pytest.fixture(scope="module")
def objects(facts, keys):
    """Ids of what the routes act on, in namespace `open`: a document whose entities were
    extracted (so that a split has mentions to move), facts, entities and a job."""
    admin = keys["admin"]
    doc = {"id": "ada", "text": "Ada Lovelace wrote the first program in London."}
    assert call(facts, "POST", "/namespaces/open/documents", admin, doc).status_code == 201
    wait_until(
        lambda: call(facts, "GET", "/namespaces/open/documents/ada", admin).json()["extraction"] == "done",
        120,
        "the document's entities extracted",
    )
    assert (
        call(
            facts, "POST", "/namespaces/open/documents", admin, {"id": "doomed", "text": "Gone."}
        ).status_code
        == 201
    )
    job = call(facts, "POST", "/namespaces/open/documents/batch", admin, {"documents": [{"text": "A job."}]})
    posted = [
        {"subject": "Ada Lovelace", "predicate": "wrote", "object": "the first program"},
        {"subject": "Doomed", "predicate": "is", "object": "deleted"},
        {"subject": "A fan", "predicate": "likes", "object": "tea"},
        {"subject": "The fan", "predicate": "likes", "object": "coffee"},
    ]
    made = call(facts, "POST", "/namespaces/open/facts", admin, {"facts": posted}).json()["facts"]
    found = call(facts, "GET", "/namespaces/open/entities?name=Ada%20Lovelace", admin).json()["entities"]
    (mentioned,) = [e for e in found if "ada" in e["documents"]]  # spaCy's, with the mention
    return {
        "doc": "ada",
        "doomed_doc": "doomed",
        "job": job.json()["id"],
        "fact": made[0]["id"],
        "doomed_fact": made[1]["id"],
        "ada": mentioned["id"],
        "program": made[0]["object_id"],
        "fan": made[2]["subject_id"],
        "fan2": made[3]["subject_id"],
    }


@pytest.mark.parametrize("service, method, path, body, scope", ROUTES)
def test_every_route_demands_a_live_key_with_its_scope_and_objects(
    facts, ai, keys, objects, service, method, path, body, scope
):
    url = {"facts": facts, "ai": ai}[service]
    ours = {**objects, **OURS}
    send = lambda key, values=ours: call(url, method, fill(path, values), key, fill(body, values))  # noqa: E731
    for key in (None, "sr-not-a-key", keys["revoked"]):
        r = send(key)
        assert (r.status_code, r.json()["error"]["code"]) == (401, "invalid_api_key"), key
        assert r.headers["x-request-id"] and r.headers["www-authenticate"] == "Bearer"
    r = send(keys[f"lacks {scope}"])
    assert (r.status_code, r.json()["error"]["code"]) == (403, "insufficient_permissions")
    limited = keys["admin" if scope == "admin" else "limited"]
    if any("{" + name + "}" in json.dumps([path, body]) for name in THEIRS):  # names a namespace or model
        r = send(limited, {**objects, **THEIRS})
        assert (r.status_code, r.json()["error"]["code"]) == (403, "insufficient_permissions")
    r = send(limited)
    assert 200 <= r.status_code < 300, r.text


def test_a_key_limited_to_a_namespace_gets_403_for_another_and_sees_only_its_own(facts, keys):
    r = call(facts, "GET", "/namespaces/secret", keys["writer"])
    assert (r.status_code, r.json()["error"]["code"]) == (403, "insufficient_permissions")
    assert "secret" in r.json()["error"]["message"]
    listed = call(facts, "GET", "/namespaces", keys["writer"]).json()["data"]
    assert [n["namespace"] for n in listed] == ["open"]
    r = call(facts, "POST", "/search", keys["writer"], {"query": "x", "namespaces": ["secret"]})
    assert r.status_code == 403
    admin = call(facts, "GET", "/namespaces", keys["admin"]).json()["data"]
    assert sorted(n["namespace"] for n in admin) == ["open", "secret"]


def test_a_search_outside_a_keys_namespaces_is_403_whether_the_namespace_exists_or_not(facts, keys):
    # A 404 for an unknown name and a 403 for another tenant's would tell which names exist.
    for names in (["secret"], ["no-such-namespace"], ["open", "no-such-namespace"]):
        r = call(facts, "POST", "/search", keys["writer"], {"query": "x", "namespaces": names})
        assert (r.status_code, r.json()["error"]["code"]) == (403, "insufficient_permissions"), names
    r = call(facts, "POST", "/search", keys["admin"], {"query": "x", "namespaces": ["no-such-namespace"]})
    assert r.status_code == 404  # a key that may use every namespace is told it does not exist


@pytest.fixture(scope="module")
def key_ids(keys, authority):
    return {r["name"]: r["id"] for r in ray.get(authority.list.remote())}


def test_ai_routes_check_scope_and_model(ai, keys, key_ids):
    chat = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}
    assert call(ai, "POST", "/chat/completions", None, chat).status_code == 401
    r = call(ai, "POST", "/chat/completions", keys["invoker"], chat)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "hello"
    r = call(ai, "POST", "/chat/completions", keys["invoker"], {**chat, "model": "other"})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "insufficient_permissions")
    assert [m["id"] for m in call(ai, "GET", "/models", keys["invoker"]).json()["data"]] == ["scripted"]
    assert call(ai, "GET", "/usage", keys["invoker"]).status_code == 403
    usage = call(ai, "GET", "/usage", keys["usage"])  # a key without admin sees its own row only
    assert usage.status_code == 200 and list(usage.json()["callers"]) == [key_ids["usage"]]
    assert call(ai, "GET", "/backends", keys["usage"]).status_code == 403  # admin only
    assert call(ai, "GET", "/backends", keys["admin"]).status_code == 200


def test_a_key_may_name_only_the_models_the_deployed_ai_service_serves(ai, authority):
    from cluster._private.connection import get
    from models._private.core.errors import ModelNotFoundError

    spec = {"name": "typo", "scopes": ["ai:invoke"], "models": ["scripted", "scriptd"]}
    with pytest.raises(ModelNotFoundError) as refused:
        get(authority.create.remote(spec))
    assert str(refused.value) == (
        "the model 'scriptd' does not exist; served models: ['all-MiniLM-L6-v2', 'other', 'scripted']"
    )
    assert "typo" not in {r["name"] for r in ray.get(authority.list.remote())}


def targets(records):
    """What audit records were about (a search of several namespaces names a list)."""
    return {
        t
        for e in records
        for t in (e.get("target") if isinstance(e.get("target"), list) else [e.get("target")])
    }


def test_audit_reads_need_admin_and_show_a_listed_key_only_its_own_objects(facts, ai, keys, key_ids):
    from cluster._private.security import audit_over_http

    for namespace in ("open", "secret"):
        assert call(facts, "GET", f"/namespaces/{namespace}", keys["admin"]).status_code == 200
    chat = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    assert call(ai, "POST", "/chat/completions", keys["tenant"], chat).status_code == 200
    everything = audit_over_http(facts, keys["admin"], limit=1000)["data"]
    assert {"open", "secret", None} <= targets(everything)
    created = audit_over_http(facts, keys["admin"], key_id=key_ids["tenant"])["data"]
    assert any(e["writer"] == "authority" and e["action"] == "keys.create" for e in created)
    assert targets(audit_over_http(facts, keys["tenant"], limit=1000)["data"]) == {"open", "scripted"}
    mine = audit_over_http(ai, keys["admin"], key_id=key_ids["tenant"], route="/v1/chat")["data"]
    assert mine and {(e["key_id"], e["target"], e["status"]) for e in mine} == {
        (key_ids["tenant"], "scripted", 200)
    }
    for path in ("/audit", "/audit?limit=0"):
        r = call(facts, "GET", path, keys["reader"])  # out of scope before any parameter is read
        assert (r.status_code, r.json()["error"]["code"]) == (403, "insufficient_permissions")
    assert call(ai, "GET", "/audit?limit=0", keys["admin"]).status_code == 400
    assert call(ai, "GET", "/audit", None).status_code == 401
    for _ in range(4):  # on both replicas, most likely
        r = call(ai, "POST", "/chat/completions", keys["admin"], {**chat, "model": "other"})
        assert r.status_code == 200
    for _ in range(4):  # an admin of one model sees no caller's other models, on either replica
        usage = call(ai, "GET", "/usage", keys["tenant"]).json()["callers"]
        assert usage and all(rows and set(rows) <= {"scripted"} for rows in usage.values()), usage
    wait_until(
        lambda: (
            "other" in call(ai, "GET", "/usage", keys["admin"]).json()["callers"].get(key_ids["admin"], {})
        ),
        10,
        "the admin's own usage of model other, on some replica",
    )
    assert list(call(ai, "GET", "/backends", keys["tenant"]).json()) == ["scripted"]


def test_a_revoked_key_stops_working_on_every_replica_within_a_second(facts, authority):
    made = ray.get(authority.create.remote({"name": "short-lived", "scopes": ["facts:read"]}))
    assert call(facts, "GET", "/namespaces", made["key"]).status_code == 200
    ray.get(authority.revoke.remote(made["record"]["id"]))
    wait_until(lambda: call(facts, "GET", "/namespaces", made["key"]).status_code == 401, 1.0, "revocation")


def test_a_rotated_key_replaces_the_old_secret(facts, authority):
    made = ray.get(authority.create.remote({"name": "rotating", "scopes": ["facts:read"]}))
    new = ray.get(authority.rotate.remote(made["record"]["id"]))
    wait_until(
        lambda: call(facts, "GET", "/namespaces", new["key"]).status_code == 200, 1.0, "the new secret"
    )
    assert call(facts, "GET", "/namespaces", made["key"]).status_code == 401


def test_the_audit_trail_verifies_and_holds_no_secret(facts, ai, keys, key_ids, authority, auth):
    from serve._private.auth.audit_verify import read_records

    r = call(facts, "POST", "/namespaces/open/documents", keys["writer"], {**DOC, "id": "audited"})
    assert r.status_code == 201
    request_id = r.headers["x-request-id"]
    call(facts, "GET", "/namespaces/secret", keys["writer"])  # refused: audited too
    revoked = call(facts, "GET", "/namespaces", keys["revoked"]).headers["x-request-id"]
    chat = {"model": "other", "messages": [{"role": "user", "content": "hi"}]}
    other = call(ai, "POST", "/chat/completions", keys["invoker"], chat).headers["x-request-id"]
    directory = ray.get(authority.audit_directory.remote())
    wait_until(  # a refusal's record is group-committed: on disk within the commit window
        lambda: {revoked, other} <= {e.get("request_id") for e in read_records(directory)},
        5,
        "the refusals' audit records",
    )
    public = load_pem_public_key(ray.get(authority.public_key.remote()).encode())
    verdicts = verify_directory(directory, public)
    assert verdicts and all(v.ok for v in verdicts), [v for v in verdicts if not v.ok]
    text = "".join(Path(directory, f"{v.writer}.jsonl").read_text() for v in verdicts)
    assert request_id in text  # the write's record was durable before its answer
    assert '"status":403' in text and '"kind":"refused"' in text
    assert not any(secret in text for secret in keys.values())
    by_request = {e.get("request_id"): e for e in read_records(directory)}
    # A revoked key's request names the key; a model refused in the route is "refused" too.
    assert {k: by_request[revoked].get(k) for k in ("kind", "status", "code", "key_id", "key_state")} == {
        "kind": "refused",
        "status": 401,
        "code": "invalid_api_key",
        "key_id": key_ids["revoked"],
        "key_state": "revoked",
    }
    assert {k: by_request[other].get(k) for k in ("kind", "status", "code", "key_id", "target")} == {
        "kind": "refused",
        "status": 403,
        "code": "insufficient_permissions",
        "key_id": key_ids["invoker"],
        "target": "other",
    }
    assert '"action":"keys.create"' in text  # admin changes, in the authority's own chain


def last_seq(path):
    return max((e["seq"] for e in map(json.loads, open(path)) if "seq" in e), default=0)


def test_a_replica_chain_cut_short_or_deleted_is_found_against_the_heads_the_authority_holds(
    facts, keys, authority, tmp_path
):
    for _ in range(6):  # over both replicas
        assert call(facts, "GET", "/namespaces", keys["reader"]).status_code == 200
    directory = Path(ray.get(authority.audit_directory.remote()))
    writers = [p.stem for p in directory.glob("facts-*.jsonl")]

    def all_witnessed():
        heads = ray.get(authority.witnesses.remote())
        return all(
            heads.get(w, {}).get("checkpoint", {}).get("seq") == last_seq(directory / f"{w}.jsonl")
            for w in writers
        )

    wait_until(all_witnessed, 30, "the authority holding every replica's latest head")
    witnesses = ray.get(authority.witnesses.remote())
    copy = tmp_path / "audit"
    shutil.copytree(directory, copy)
    public = load_pem_public_key(ray.get(authority.public_key.remote()).encode())
    assert all(v.ok for v in verify_directory(str(copy), public, witnesses))
    cut, gone = writers[0], writers[1]
    entries = (copy / f"{cut}.jsonl").read_text().splitlines(keepends=True)
    (copy / f"{cut}.jsonl").write_text(entries[0])  # one record left: a valid, shorter chain
    (copy / f"{gone}.jsonl").unlink()
    verdicts = {v.writer: v for v in verify_directory(str(copy), public, witnesses)}
    assert not verdicts[cut].ok and "(cut)" in verdicts[cut].reason
    assert not verdicts[gone].ok and "missing" in verdicts[gone].reason


def clear_of_a_minute_boundary():
    """Per-minute limits count in sliding windows of 1-s slots; kept clear of a boundary all the
    same, so that a burst's leases end in one minute."""
    wait_until(lambda: 2 < time.time() % 60 < 50, 60, "a point well inside a minute")


def burst(n, send):
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: send(), range(n)))


def replicas_heard(authority, service):
    """The gateway replicas of `service` that have audited a request (one chain each)."""
    directory = Path(ray.get(authority.audit_directory.remote()))
    return len(list(directory.glob(f"{service}-*.jsonl")))


def test_requests_per_minute_hold_exactly_across_two_replicas(facts, keys, authority):
    clear_of_a_minute_boundary()
    answers = burst(15, lambda: call(facts, "GET", "/namespaces", keys["rpm"]))
    assert sorted(r.status_code for r in answers) == [200] * 7 + [429] * 8
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 0 < int(refused.headers["retry-after"]) <= 61  # a unit counts until 60 whole 1-s slots pass
    assert replicas_heard(authority, "facts") == 2


# '"hi"' is 4 bytes, 8 for the message's template, 64 for the chat's, 74 for the completion: 150,
# as the provider bills.
CHAT_150 = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 74}


def test_a_token_budget_admits_exactly_what_it_holds_across_two_replicas(ai, keys, authority):
    """Each request's worst case is exactly what the provider bills (150 tokens), so a budget
    of 5 such requests and 100 tokens admits 5 of 12 sent at once, however they interleave."""
    answers = burst(12, lambda: call(ai, "POST", "/chat/completions", keys["budget"], CHAT_150))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 5 + [429] * 7, [r.text for r in answers if r.status_code not in (200, 429)]
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.json()["error"]["code"] == "insufficient_quota" and "retry-after" in refused.headers
    assert replicas_heard(authority, "ai") == 2


def test_a_cost_budget_admits_exactly_what_it_holds_across_two_replicas(ai, keys):
    """By the price table a request costs $0.30 at worst and as billed, so $1.60 admits 5 of 12."""
    answers = burst(12, lambda: call(ai, "POST", "/chat/completions", keys["dollars"], CHAT_150))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 5 + [429] * 7, [r.text for r in answers if r.status_code not in (200, 429)]
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert "cost budget" in refused.json()["error"]["message"]


def test_a_stream_whose_provider_reports_no_usage_is_charged_its_worst_case(ai, keys):
    """The scripted provider answers a stream with no usage at all: each stream is charged its
    reservation (150 tokens), so a budget of three admits three."""
    streamed = {**CHAT_150, "stream": True}
    for _ in range(3):
        r = call(ai, "POST", "/chat/completions", keys["three streams"], streamed)
        assert r.status_code == 200 and "[DONE]" in r.text
    r = call(ai, "POST", "/chat/completions", keys["three streams"], streamed)
    assert (r.status_code, r.json()["error"]["code"]) == (429, "insufficient_quota")


def test_a_request_larger_than_the_whole_budget_is_not_told_to_retry(ai, keys):
    r = call(ai, "POST", "/chat/completions", keys["small budget"], CHAT_150)
    assert (r.status_code, r.json()["error"]["code"]) == (429, "insufficient_quota")
    assert "more than the key's whole token budget" in r.json()["error"]["message"]
    assert "retry-after" not in r.headers


LOOKUP = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def test_a_tool_loop_is_counted_and_limited_call_by_call_and_its_arguments_never_audited(
    ai, keys, key_ids, authority
):
    """Three calls of a loop (a call, its result, the next call) are three requests to the
    limits, the ledger and the audit; the audit says how many tool calls each answered, and
    holds neither the calls' arguments nor the tools' results."""
    from serve._private.auth.audit_verify import read_records

    clear_of_a_minute_boundary()
    key = keys["tool loop"]  # 3 requests a minute
    messages, request_ids = [{"role": "user", "content": "look it up"}], []
    for _ in range(3):
        r = call(
            ai,
            "POST",
            "/chat/completions",
            key,
            {"model": "scripted", "messages": messages, "tools": [LOOKUP]},
        )
        assert r.status_code == 200, r.text
        request_ids.append(r.headers["x-request-id"])
        message = r.json()["choices"][0]["message"]
        assert r.json()["choices"][0]["finish_reason"] == "tool_calls"
        assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"query": SECRET_ARGUMENT}
        tool_result = {
            "role": "tool",
            "tool_call_id": message["tool_calls"][0]["id"],
            "content": SECRET_RESULT,
        }
        messages += [message, tool_result]
    r = call(
        ai, "POST", "/chat/completions", key, {"model": "scripted", "messages": messages, "tools": [LOOKUP]}
    )
    assert (r.status_code, r.json()["error"]["code"]) == (429, "rate_limit_exceeded")  # the 4th

    def used():  # the other replica's charges reach the ledger within a second or so
        return call(ai, "GET", "/usage", keys["admin"]).json()["callers"].get(key_ids["tool loop"], {})

    wait_until(lambda: used().get("scripted", {}).get("requests") == 3, 10, "3 requests in the ledger")
    usage = used()["scripted"]
    assert usage["prompt_tokens"] == 300 and usage["completion_tokens"] == 150
    directory = ray.get(authority.audit_directory.remote())
    wait_until(
        lambda: set(request_ids) <= {e.get("request_id") for e in read_records(directory)},
        5,
        "the loop's audit records",
    )
    records = [e for e in read_records(directory) if e.get("request_id") in request_ids]
    assert [(e["kind"], e["status"], e["tool_calls"], e["tokens"]) for e in records] == [
        ("request", 200, 1, 150)
    ] * 3
    text = "".join(p.read_text() for p in Path(directory).glob("*.jsonl*"))
    assert SECRET_ARGUMENT not in text and SECRET_RESULT not in text and "lookup" not in text
