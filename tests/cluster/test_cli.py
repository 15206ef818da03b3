"""The `swarm` command and `ray job submit`, run as a user runs them, against the session head."""

import json
import subprocess
import sys
import time

import pytest
import ray
import yaml

from actors import MemoryAgent
from benchmarks._chaos import chaos_swarm
from cluster import Client, load_config, up
from tests.conftest import RAY, ROOT, free_port, user_env


def swarm(*args, env=None, check=True, timeout_s=300):
    """`swarm ARGS` as a user runs it: in the environment of a user's shell, unless `env`."""
    proc = subprocess.run(
        [sys.executable, "-m", "cluster", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env or user_env(),
    )
    if check and proc.returncode != 0:
        pytest.fail(f"swarm {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def config_file(tmp_path, namespace):
    data = yaml.safe_load((ROOT / "configs" / "local.yaml").read_text())
    data["namespace"] = namespace
    data.pop("ai")  # the AI service is deployed by the job test below and tests/serve
    data.pop("mcp")  # MCP both ways: tests/cluster/test_mcp_system.py
    # Its data in the test's directory; Serve's port is whichever runs, else a free one.
    data["facts"] = {**data["facts"], "path": str(tmp_path / "facts"), "port": free_port()}
    path = tmp_path / "system.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_up_status_submit_down(head, namespace, config_file):
    addr = ["--address", head["address"]]
    ns = ["--namespace", namespace, *addr]
    up = swarm("up", "--config", str(config_file), *addr)
    assert "ai.stats.0" in up.stdout and "is up" in up.stdout
    again = swarm("up", "--config", str(config_file), *addr)  # idempotent: same agents, no more
    assert again.stdout.count("alive") == up.stdout.count("alive")

    state = json.loads(swarm("status", "--json", *ns).stdout)
    assert sorted(s["swarm"] for s in state["swarms"]) == ["ai", "business", "facts", "storage"]
    assert all(a["state"] == "alive" for s in state["swarms"] for a in s["agents"])
    assert up.stderr == ""  # Ray's own notices (token, raylet, Serve) stay in Ray's logs
    assert state["swarms"][0]["supervision"]["strategy"] == "one_for_one"
    # What the README's own lines print (`status`'s table, `submit --wait`, a delegated task,
    # `capabilities`, `result` for people, memory.delete of one `id`, `facts search`'s table)
    # is checked on what they printed in tests/cluster/test_local_head.py; here what they do not run.

    delegated = swarm(
        "submit", "math.stats", "--input", '{"numbers": [1, 2, 3]}', "--swarm", "ai", "--wait", "--json", *ns
    )
    result = json.loads(delegated.stdout)
    assert result["task_id"].startswith("ai:") and result["swarm"] == "business"
    assert result["output"]["mean"] == 2.0

    unknown = swarm("submit", "no.such", *ns, check=False)
    assert unknown.returncode == 2 and "no swarm offers capability 'no.such'" in unknown.stderr

    bad_input = swarm("submit", "text.stats", "--input", "[1]", *ns, check=False)
    assert bad_input.returncode == 2 and "must be a JSON object" in bad_input.stderr

    # A payload that does not fit is refused at submit, naming each field, also when the task
    # is delegated (the swarm that runs it checks it before accepting it).
    refused = swarm("submit", "data.checksum", "--input", '{"text": 5, "kk": 1}', *ns, check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "error: invalid payload for 'data.checksum': text: Input should be a valid string; kk: unknown field"
    )
    delegated_refusal = swarm(
        "submit", "math.stats", "--input", '{"numbers": []}', "--swarm", "ai", *ns, check=False
    )
    assert delegated_refusal.returncode == 2 and "numbers: List should have at least 1 item" in (
        delegated_refusal.stderr
    )
    # `result` exits as `submit --wait` does: 1 for a task that ended without succeeding. Input
    # only the agent can judge (a schema that is no JSON Schema) fails after one attempt.
    bad_schema = '{"schema": {"type": 5}, "document": 1}'
    failed_id = swarm("submit", "data.validate", "--input", bad_schema, *ns).stdout.strip()
    failed = json.loads(swarm("result", failed_id, "--json", *ns, check=False).stdout)
    assert failed["status"] == "failed" and failed["attempts"] == 1 and failed["error_type"] == "PayloadError"
    assert swarm("result", failed_id, *ns, check=False).returncode == 1

    # `capabilities` with a name: what its payload takes.
    memory = swarm("capabilities", "memory.", *ns).stdout
    assert "memory.delete  (swarm storage, pools memory)" in memory
    assert "  ids    list[string]" in memory and "  query       string | null" in memory
    for cap in ("memory.store", "memory.search", "memory.delete"):  # each says what it does
        assert f"{cap}  (swarm storage, pools memory)\n  {MemoryAgent.descriptions[cap]}\n" in memory
    answer = swarm("capabilities", "llm.generate", *ns).stdout  # declared: no "not declared"
    assert "  input " in answer and "not declared" not in answer
    schema = json.loads(swarm("capabilities", "text.stats", "--json", *ns).stdout)
    assert schema[0]["schema"]["required"] == ["text"]
    # `cancel`: a task still queued behind slow ones is cancelled; an ended one is not.
    slow = {"n": 999999999999989}  # a prime near 10**15: a second or two of trial division each
    client = Client(namespace)  # one call for the blockers: a CLI run per task takes seconds
    blockers = client.submit_many("math.factorize", [slow] * 12, swarm="business")
    queued = client.submit("math.factorize", slow, swarm="business", priority=-1)
    assert swarm("cancel", queued, *ns).stdout.strip() == f"cancelled {queued}"
    again = swarm("cancel", queued, *ns, check=False)
    assert again.returncode == 1 and again.stdout.strip() == f"not cancelled: {queued} already cancelled"
    assert swarm("result", queued, *ns, check=False).returncode == 1
    for task_id in blockers:  # no need to burn the CPU on them any longer
        client.cancel(task_id)

    # `swarm facts`: documents from a JSONL stream and a text file, then a search.
    jsonl = "\n".join(
        json.dumps({"id": i, "title": t, "text": x})
        for i, t, x in [
            ("curie", "Marie Curie", "Marie Curie was born in Warsaw."),
            ("warsaw", "Warsaw", "Warsaw lies on the Vistula river."),
        ]
    )
    ingested = subprocess.run(
        [sys.executable, "-m", "cluster", "facts", "ingest", "-", "--in", "default", *ns],
        input=jsonl,
        capture_output=True,
        text=True,
        timeout=300,
        env=user_env(),
    )
    assert ingested.returncode == 0, ingested.stderr
    progress = json.loads(ingested.stdout)
    assert progress["documents"] == 2 and progress["indexed"] == 2 and progress["done"] == 2, json.dumps(
        progress
    )
    assert "stored" in ingested.stderr and "extracted" in ingested.stderr  # the progress bars
    note = config_file.parent / "berlin.txt"
    note.write_text("Berlin lies on the Spree river.")
    assert json.loads(swarm("facts", "ingest", str(note), *ns).stdout)["done"] == 1
    question = "Which river flows through the city where Marie Curie was born?"
    found = json.loads(swarm("facts", "search", question, "--json", "-k", "2", *ns).stdout)
    assert {p["document_id"] for p in found["passages"]} == {"curie", "warsaw"}
    empty = swarm("facts", "ingest", str(config_file.parent / "missing.jsonl"), *ns, check=False)
    assert empty.returncode == 2 and "no such file" in empty.stderr

    # A swarm whose queen is gone is reported, not a traceback.
    ray.kill(ray.get_actor("queen:business", namespace=namespace), no_restart=True)
    table = swarm("status", *ns).stdout
    assert "business: queen:business is not running; `swarm up` starts it again" in table

    # status and down find the namespace in the config file.
    by_config = json.loads(swarm("status", "--json", "--config", str(config_file), *addr).stdout)
    assert by_config["namespace"] == namespace
    removed = swarm("down", "--config", str(config_file), *addr).stdout
    assert "removed queen:ai" in removed and "removed registry" in removed
    assert f"removed Serve application {namespace}-facts" in removed
    gone = swarm("status", *ns, check=False)
    assert gone.returncode == 2 and "run `swarm up` first" in gone.stderr


def test_an_unreachable_cluster_is_reported_in_one_line_within_seconds(head):
    started = time.monotonic()
    proc = swarm("status", "--address", f"127.0.0.1:{free_port()}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot reach a Ray cluster at 127.0.0.1:")
    assert len(proc.stderr.strip().splitlines()) == 1  # no traceback
    assert time.monotonic() - started < 30  # ray.init alone keeps trying for over a minute


def test_a_cluster_that_wants_a_token_this_user_lacks_is_reported_in_one_line(head, tmp_path):
    """The session head runs Ray's token auth (its home has Ray's token); a user whose home has
    none, or whose RAY_AUTH_TOKEN is another, is told so at once, not after ray.init's retries."""
    (tmp_path / "empty-home").mkdir()
    stranger = user_env(HOME=str(tmp_path / "empty-home"))
    started = time.monotonic()
    none = swarm("status", "--address", head["address"], env=stranger, check=False)
    assert none.returncode == 2
    assert none.stderr.splitlines() == [
        f"error: the Ray cluster at {head['address']} wants its authentication token and none is set "
        "(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token); "
        "`ray get-auth-token` on its head prints it"
    ]
    other = swarm(
        "status", "--address", head["address"], env={**stranger, "RAY_AUTH_TOKEN": "0" * 64}, check=False
    )
    assert other.returncode == 2
    assert "and the token from RAY_AUTH_TOKEN is not its token" in other.stderr
    assert len(other.stderr.splitlines()) == 1  # none of Ray's raw retry lines
    assert time.monotonic() - started < 30  # ray.init alone retries a refused token for ~30 s


def test_down_leaves_running_a_ray_head_it_did_not_start(head, namespace):
    # What an `up` that started a head left in the registry, before a reboot (or any other
    # head): this head is not that one, so `down` must not stop it, or every Ray on the machine.
    from cluster._private.lifecycle import LOCAL_HEAD_KEY

    config = load_config({"namespace": namespace, "swarms": {"one": chaos_swarm(agents=1)}})
    up(config)
    registry = ray.get_actor("registry", namespace=namespace)
    ray.get(registry.kv_put.remote(LOCAL_HEAD_KEY, True))
    removed = swarm("down", "--namespace", namespace, "--address", head["address"]).stdout
    assert "removed registry" in removed and "local Ray head" not in removed
    ray_status = [RAY, "status", "--address", head["address"]]
    # Ray's own CLI sends the token only when told to (README, "Under `ray job submit`").
    assert (
        subprocess.run(ray_status, capture_output=True, env=user_env(RAY_AUTH_MODE="token")).returncode == 0
    )


def test_keys_and_audit_commands(head, namespace, tmp_path):
    """`swarm keys` against a running key authority, and `swarm audit verify` finding an edit."""
    from serve._private.auth.authority import get_authority
    from serve._private.auth.config import AuthConfig

    authority = get_authority(namespace, AuthConfig(enabled=True, path=str(tmp_path / "auth")))
    ns = ["--namespace", namespace, "--address", head["address"]]
    try:
        made = swarm(
            "keys", "create", "--name", "ci", "--scopes", "facts:read,ai:invoke", "--models", "m1",
            "--expires-in", "30d", *ns,
        )  # fmt: skip
        secret = made.stdout.strip()
        assert secret.startswith("sr-") and "not kept" in made.stderr
        listed = json.loads(swarm("keys", "list", "--json", *ns).stdout)
        (record,) = listed
        assert record["scopes"] == ["facts:read", "ai:invoke"] and record["models"] == ["m1"]
        assert secret not in json.dumps(listed) and secret[3:11] == record["hint"]
        assert record["expires_at"] - record["created_at"] == 30 * 86400
        rotated = swarm("keys", "rotate", record["id"], *ns).stdout.strip()
        assert rotated.startswith("sr-") and rotated != secret
        swarm("keys", "revoke", record["id"], *ns)
        assert json.loads(swarm("keys", "list", "--json", *ns).stdout)[0]["revoked_at"] is not None
        bad = swarm("keys", "create", "--name", "x", "--scopes", "everything", *ns, check=False)
        assert bad.returncode == 2 and "scopes" in bad.stderr
        ray.get(authority.set_served_models.remote(["m1", "m1-alias"]))  # as deploying an AI service does
        unserved = swarm(
            "keys", "create", "--name", "x", "--scopes", "ai:invoke", "--models", "other", *ns, check=False
        )
        assert unserved.returncode == 2 and unserved.stdout == ""  # no key made
        assert "error: the model 'other' does not exist; served models: ['m1', 'm1-alias']" in unserved.stderr

        verified = swarm("audit", "verify", *ns)
        assert "authority: 3 records" in verified.stdout and "ok" in verified.stdout
        tail = swarm("audit", "tail", "--dir", str(tmp_path / "auth" / "audit")).stdout.splitlines()
        assert [line.split()[3] for line in tail] == ["keys.create", "keys.rotate", "keys.revoke"]
        pem = tmp_path / "audit.pem"
        pem.write_text(swarm("audit", "pubkey", *ns).stdout)
        log = tmp_path / "auth" / "audit" / "authority.jsonl"
        log.write_text(log.read_text().replace('"keys.rotate"', '"keys.create"'))
        offline = swarm("audit", "verify", "--dir", str(log.parent), "--pubkey", str(pem), check=False)
        # Line 3: each key change is followed by the authority's signed head (kept in heads.json).
        assert offline.returncode == 1 and "BAD at line 3" in offline.stdout and "edited" in offline.stdout
        # From the head the online verify had the authority sign (after seq 3), on: the edit is before.
        recent = swarm("audit", "verify", "--dir", str(log.parent), "--pubkey", str(pem), "--since", "0s")
        assert "authority: 0 records (from seq 4)" in recent.stdout and recent.stdout.rstrip().endswith("ok")
    finally:
        ray.kill(authority)


def test_keys_create_limits_a_key_to_swarms_and_capabilities_for_mcp(head, namespace, tmp_path):
    """`--swarm` and `--capability` (repeatable fnmatch patterns) reach the key's record."""
    from serve._private.auth.authority import get_authority
    from serve._private.auth.config import AuthConfig

    authority = get_authority(namespace, AuthConfig(enabled=True, path=str(tmp_path / "auth")))
    ns = ["--namespace", namespace, "--address", head["address"]]
    try:
        swarm(
            "keys", "create", "--name", "assistant", "--scopes", "mcp:call", "--swarm", "text",
            "--swarm", "math*", "--capability", "text.*", "--capability", "recall_memory", *ns,
        )  # fmt: skip
        swarm("keys", "create", "--name", "open", "--scopes", "mcp:call", *ns)
        by_name = {r["name"]: r for r in json.loads(swarm("keys", "list", "--json", *ns).stdout)}
        assert by_name["assistant"]["swarms"] == ["text", "math*"]
        assert by_name["assistant"]["capabilities"] == ["text.*", "recall_memory"]
        assert by_name["open"]["swarms"] is None and by_name["open"]["capabilities"] is None
    finally:
        ray.kill(authority)
