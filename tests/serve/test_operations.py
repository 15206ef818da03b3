"""Operating a running system like Ray: its Prometheus metrics, scraped over HTTP from the
session head's metrics export port after real work (swarms, delegation, retries, a timeout, a
restart, memory, the AI service over a scripted provider, the facts service)."""

import io
import json
import subprocess
import sys
import time
from collections import defaultdict

import httpx
import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from cluster import load_config
from cluster._private.credentials import user_key
from cluster._private.memory_load import load_records, records_of_file
from cluster._private.usage import OUTSIDE_TASKS
from cluster._private.watch import watch
from models._private.core.names import authority_name
from serve._private.auth.authority import LIMITS_COMPACT_BYTES, USAGE_COMPACT_BYTES
from tests.conftest import user_env
from tests.scripted_provider import USAGE, ScriptedProvider
from tests.waiting import wait_until

SYSTEM = "ops-tests"
LLM_TASKS = 3
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def provider():
    p = ScriptedProvider()
    p.respond = lambda body: "scripted answer"
    yield p
    p.close()


@pytest.fixture(scope="module")
def system(serve_port, provider, tmp_path_factory):
    auth = {"path": str(tmp_path_factory.mktemp("auth"))}  # keys and ledgers of this run only
    config = load_config(
        {
            "namespace": SYSTEM,
            "ai": {
                "port": serve_port,
                "route_prefix": "/ops-tests",
                "providers": {"scripted": {"base_url": provider.url, "model": "m"}},
                "prices": {
                    "scripted": {"input_usd_per_million_tokens": 2, "output_usd_per_million_tokens": 10}
                },
                "embeddings": None,
                "auth": auth,
            },
            "facts": {
                "port": serve_port,
                "route_prefix": "/ops-tests-facts",
                "path": str(tmp_path_factory.mktemp("facts")),
                "namespaces": {"kb": {"extractor": "none"}},
                "auth": auth,
            },
            "swarms": {
                "work": {
                    "queen": {"max_retries": 1, "retry_backoff_s": 0.01},
                    "journal": {"compact_after_mb": 0.002},  # compacts within the test's work
                    "memory": {"memory": {"path": str(tmp_path_factory.mktemp("memory"))}},
                    "pools": {
                        "flaky": {"agent": {"class": "tests.agents:FlakyAgent"}},
                        "sleep": {"colocate": True, "agent": {"class": "tests.agents:SleepAgent"}},
                        "memory": {"colocate": True, "agent": {"class": "actors:MemoryAgent"}},
                        "llm": {
                            "colocate": True,
                            "agent": {
                                "class": "actors:LLMAgent",
                                "params": {"model": "scripted", "max_tokens": 8, "temperature": 0},
                            },
                        },
                    },
                },
                "other": {"pools": {"count": {"agent": {"class": "tests.agents:CounterAgent"}}}},
                "brittle": {  # escalates at its first restart, and stays failed
                    "supervision": {"max_restarts": 0, "recover_after_s": None},
                    "pools": {"sleep": {"agent": {"class": "tests.agents:SleepAgent"}}},
                },
            },
        }
    )
    from cluster import Client, down, up

    progress: list[tuple[str, int, int]] = []
    up(config, progress=lambda what, done, total: progress.append((what, done, total)))
    try:
        client = Client(SYSTEM)
        client.progress = progress  # what `up` reported, for the test of its progress bars
        yield client
    finally:
        down(SYSTEM)


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] of the node's metrics export."""
    samples = defaultdict(list)
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for s in family.samples:
            samples[s.name].append((s.labels, s.value))
    return samples


def total(samples, name: str, **labels: str) -> float:
    """The sum of `name` over every series whose labels include `labels` (whatever their
    WorkerId or replica)."""
    rows = samples.get(name, [])
    return sum(v for lbl, v in rows if all(lbl.get(k) == want for k, want in labels.items()))


def series(samples, name: str, **labels: str) -> list[dict[str, str]]:
    return [lbl for lbl, _ in samples.get(name, []) if all(lbl.get(k) == v for k, v in labels.items())]


def test_metrics_of_swarms_services_memory_and_journals_after_real_work(ray_head, system, serve_port):
    work = {"system": SYSTEM, "swarm": "work"}
    flaky = [system.submit("test.flaky", {"fail_times": 1}, swarm="work") for _ in range(2)]
    failing = system.submit("test.flaky", {"fail_times": 5}, swarm="work")
    timing_out = system.submit("test.sleep", {"s": 30}, swarm="work", timeout_s=0.3, max_retries=0)
    handed = system.submit("test.count", {}, swarm="work")  # only `other` offers it
    note = {"text": "Ray restarts detached actors.", "id": "n1"}
    stored = system.submit("memory.store", note, swarm="work")
    asked = [system.submit("llm.generate", {"input": f"q {i}"}, swarm="work") for i in range(LLM_TASKS)]
    ids = [*flaky, failing, timing_out, handed, stored, *asked]
    statuses = [system.result(t, timeout_s=120).status.value for t in ids]
    assert statuses == ["succeeded"] * 2 + ["failed", "timed_out"] + ["succeeded"] * (2 + LLM_TASKS)

    # A host killed under `other` is restarted by its supervisor; under `brittle`, whose
    # intensity allows no restart, the swarm escalates.
    for swarm in ("other", "brittle"):
        queen = ray.get_actor(f"queen:{swarm}", namespace=SYSTEM)
        (host_id, host, _), *_ = ray.get(queen.hosts.remote())
        ray.kill(host, no_restart=True)
        ray.get(queen.replace_hosts.remote([host_id], "killed by the test"))
    # A memory write the store refuses (a namespace it does not hold) is an operation error.
    store = ray.get_actor("memory:work", namespace=SYSTEM)
    with pytest.raises(ray.exceptions.RayTaskError):
        ray.get(store.upsert.remote([{"id": "x", "namespace": "elsewhere", "text": "t"}]))

    # The facts service: a document in, one not found, and requests refused.
    key = {"Authorization": f"Bearer {user_key(SYSTEM)}"}
    facts = f"http://127.0.0.1:{serve_port}/ops-tests-facts/v1/namespaces/kb"
    doc = {"id": "d1", "title": "Ray", "text": "Ray restarts detached actors."}
    assert httpx.post(f"{facts}/documents", json=doc, headers=key).status_code == 201
    assert httpx.get(f"{facts}/documents/nope", headers=key).status_code == 404
    assert httpx.get(facts).status_code == 401
    authority = ray.get_actor(authority_name(SYSTEM), namespace=SYSTEM)
    agents_key = next(r["id"] for r in ray.get(authority.list.remote()) if r["name"] == "agents")
    slow = ray.get(authority.create.remote({"name": "one a minute", "scopes": ["facts:read"], "rpm": 1}))
    one = {"Authorization": f"Bearer {slow['key']}"}
    wait_until(lambda: httpx.get(facts, headers=one).status_code == 200, 30, "the new key on the replica")
    assert httpx.get(facts, headers=one).status_code == 429
    memory = {"system": SYSTEM, "store": "work", "operation": "upsert"}

    def scraped():
        s = scrape(ray_head["metrics"])
        done = (
            total(s, "ray_swarmray_tasks_completed_total", **work, capability="llm.generate") == LLM_TASKS
            and total(s, "ray_swarmray_supervisor_restarts_total", system=SYSTEM, swarm="other") >= 1
            and total(s, "ray_swarmray_supervisor_escalations_total", system=SYSTEM, swarm="brittle") == 1
            # The queen counts its agents on its next tick, after the escalation stopped them.
            and total(s, "ray_swarmray_agents", system=SYSTEM, swarm="brittle", state="alive") == 0
            and total(s, "ray_swarmray_refusals_total", system=SYSTEM, reason="rate_limit_exceeded") == 1
            and total(s, "ray_swarmray_facts_records", system=SYSTEM, namespace="kb", kind="documents") == 1
            and series(s, "ray_swarmray_facts_backlog", system=SYSTEM, namespace="kb", stage="index")
            and total(s, "ray_swarmray_facts_backlog", system=SYSTEM, namespace="kb") == 0  # indexed
            # The health monitor's next round after the escalation.
            and total(s, "ray_swarmray_swarm_health", system=SYSTEM, swarm="brittle") == 2
            # Each process reports on its own clock: the last event of each of the others.
            and total(s, "ray_swarmray_facts_operation_errors_total", system=SYSTEM, namespace="kb") == 1
            and total(s, "ray_swarmray_memory_operation_seconds_count", **memory) == 2
            and total(s, "ray_swarmray_http_request_seconds_count", system=SYSTEM, route=CHAT) == LLM_TASKS
            and any(
                lbl["journal"].endswith(f"{SYSTEM}/work")
                for lbl in series(s, "ray_swarmray_journal_compactions_total", system=SYSTEM)
            )
            # The key authority journals the replicas' usage batches (sent every second).
            and any(
                lbl["journal"].endswith("/usage")
                for lbl in series(s, "ray_swarmray_journal_bytes", system=SYSTEM)
            )
        )
        return s if done else None

    s = wait_until(scraped, timeout_s=60, what="the work's metrics in the scrape")

    # Tasks per swarm and capability, by outcome.
    def tasks(name, capability, swarm="work", **more):
        return total(
            s, f"ray_swarmray_{name}_total", system=SYSTEM, swarm=swarm, capability=capability, **more
        )

    assert tasks("tasks_submitted", "test.flaky") == 3
    assert tasks("tasks_retried", "test.flaky") == 2 + 1  # one retry each; the failing one's only retry
    assert tasks("tasks_completed", "test.flaky", status="succeeded") == 2
    assert tasks("tasks_completed", "test.flaky", status="failed") == 1
    assert tasks("tasks_completed", "test.sleep", status="timed_out") == 1
    assert tasks("tasks_delegated", "test.count", to="other") == 1
    assert tasks("tasks_completed", "test.count", swarm="other", status="succeeded") == 1
    assert tasks("tasks_completed", "test.count", status="succeeded") == 0  # counted where it ran

    # Latency histograms: every finished task once; the retried ones ran twice but are timed once.
    def timed(name, capability):
        return total(s, f"ray_swarmray_{name}", **work, capability=capability)

    assert timed("task_latency_seconds_count", "test.flaky") == 3
    assert timed("task_run_seconds_count", "test.sleep") == 1
    assert timed("task_queue_wait_seconds_count", "llm.generate") == LLM_TASKS
    assert timed("task_run_seconds_sum", "test.sleep") > 0.2  # the timed-out sleep ran its 0.3 s
    sleeps = {**work, "capability": "test.sleep"}  # this system's: other tests' sleeps are there too
    buckets = [v for lbl, v in s["ray_swarmray_task_run_seconds_bucket"] if sleeps.items() <= lbl.items()]
    assert buckets and max(buckets) == 1  # cumulative buckets up to +Inf

    # Gauges: queues drained, agents per pool and state, the delegation breaker closed.
    assert series(s, "ray_swarmray_queue_depth", **work, capability="test.sleep")
    assert total(s, "ray_swarmray_queue_depth", **work) == 0
    assert total(s, "ray_swarmray_agents", **work, pool="flaky", state="alive") == 1
    assert total(s, "ray_swarmray_agents", **work, state="dead") == 0
    assert series(s, "ray_swarmray_delegation_breaker_state", **work, target="other")
    assert total(s, "ray_swarmray_delegation_breaker_state", **work, target="other") == 0

    # Swarms' health: 0 healthy, 2 failed (escalated).
    assert total(s, "ray_swarmray_swarm_health", **work) == 0
    assert total(s, "ray_swarmray_swarm_health", system=SYSTEM, swarm="brittle") == 2

    # Journals (the work swarm's compacts past 2 KB) and the swarm's memory.
    # Every journal of the system carries its name: queens', the key authority's, the memory's log.
    journals = {lbl["journal"] for lbl in series(s, "ray_swarmray_journal_bytes", system=SYSTEM)}
    work_journal = next(j for j in journals if j.endswith(f"{SYSTEM}/work"))
    assert any(j.endswith("/keys") for j in journals) and any(j.endswith("/usage") for j in journals)
    assert any(j.endswith("/wal") for j in journals), journals
    assert total(s, "ray_swarmray_journal_sync_seconds_count", journal=work_journal) > 0
    assert total(s, "ray_swarmray_journal_compactions_total", journal=work_journal) >= 1
    # Where each owner compacts next: the queen past its limit or twice its size after the last
    # compaction; the key authority's limits and usage journals at their limits (never reached).
    assert total(s, "ray_swarmray_journal_compact_at_bytes", journal=work_journal) >= 0.002 * 2**20
    compact_at = {
        lbl["journal"].rsplit("/", 1)[-1]: v
        for lbl, v in s["ray_swarmray_journal_compact_at_bytes"]
        if lbl["system"] == SYSTEM and not lbl["journal"].endswith(f"{SYSTEM}/work")
    }
    assert compact_at["limits"] == LIMITS_COMPACT_BYTES and compact_at["usage"] == USAGE_COMPACT_BYTES
    assert total(s, "ray_swarmray_memory_operation_seconds_count", **memory) == 2  # the refused one too
    assert total(s, "ray_swarmray_memory_operation_errors_total", **memory) == 1
    assert total(s, "ray_swarmray_memory_records", system=SYSTEM, store="work") == 1

    # The AI service: tokens and cost per model and key, requests by route, Serve's own tags.
    ai = {"system": SYSTEM, "model": "scripted", "key": agents_key}
    assert total(s, "ray_swarmray_ai_tokens_total", **ai, kind="prompt") == LLM_TASKS * USAGE["prompt_tokens"]
    completion = total(s, "ray_swarmray_ai_tokens_total", **ai, kind="completion")
    assert completion == LLM_TASKS * USAGE["completion_tokens"]
    cost = LLM_TASKS * (100 * 2 + 50 * 10) / 1e6
    assert total(s, "ray_swarmray_ai_cost_usd_total", **ai) == pytest.approx(cost)
    chat_route = {"system": SYSTEM, "route": CHAT}
    (chat,) = series(s, "ray_swarmray_http_requests_total", **chat_route)
    assert (chat["service"], chat["method"], chat["status"]) == ("ai", "POST", "200")
    assert (chat["application"], chat["deployment"]) == (f"{SYSTEM}-ai", "gateway") and chat["replica"]
    assert total(s, "ray_swarmray_http_requests_total", **chat_route) == LLM_TASKS
    assert total(s, "ray_swarmray_http_request_seconds_count", **chat_route) == LLM_TASKS
    assert total(s, "ray_swarmray_ai_breaker_state", system=SYSTEM, backend="scripted") == 0

    # The facts service: the shard's operations, what it holds, refusals with their reasons.
    def shard(name, operation):
        return total(s, f"ray_swarmray_{name}", system=SYSTEM, namespace="kb", operation=operation)

    assert shard("facts_operation_seconds_count", "add_documents") == 1
    assert shard("facts_operation_errors_total", "document") == 1  # the 404
    backlog = {"system": SYSTEM, "namespace": "kb"}
    assert {lbl["stage"] for lbl in series(s, "ray_swarmray_facts_backlog", **backlog)} == {
        "extraction",
        "index",
    }
    door = {"system": SYSTEM, "service": "facts"}
    assert total(s, "ray_swarmray_refusals_total", **door, key="none", reason="invalid_api_key") == 1
    limited = {"key": slow["record"]["id"], "reason": "rate_limit_exceeded"}
    assert total(s, "ray_swarmray_refusals_total", **door, **limited) == 1
    assert series(s, "ray_swarmray_http_requests_total", **door, route="/v1/namespaces/{namespace}/documents")
    assert series(
        s, "ray_swarmray_http_requests_total", **door, route="-", status="401"
    )  # refused at the door


def test_gauges_stay_in_the_scrape_while_nothing_changes(ray_head, system):
    # Ray drops a gauge not reported within two report intervals (here 2 s). A memory store
    # sets its record count only when it writes: the count must still be there well after that.
    system.run("memory.store", {"text": "Serve restarts replicas.", "id": "n2"}, swarm="work")
    held = ray.get(ray.get_actor("memory:work", namespace=SYSTEM).stats.remote())["records"]
    labels = {"system": SYSTEM, "store": "work"}
    wait_until(
        lambda: total(scrape(ray_head["metrics"]), "ray_swarmray_memory_records", **labels) == held, 30
    )
    seen = time.monotonic()
    while time.monotonic() - seen < 6:  # three report intervals and more, with no write
        assert total(scrape(ray_head["metrics"]), "ray_swarmray_memory_records", **labels) == held


FIELDS = ("requests", "prompt_tokens", "completion_tokens", "cost_microusd")


def swarm_cli(ray_head, *args: str) -> subprocess.CompletedProcess:
    """`swarm ARGS` on the test's system, as a user runs it."""
    where = ["--namespace", SYSTEM, "--address", ray_head["address"]]
    return subprocess.run(
        [sys.executable, "-m", "cluster", *args, *where],
        capture_output=True,
        text=True,
        timeout=120,
        env=user_env(),
    )


def test_the_ledger_adds_up_per_swarm_and_per_key_and_survives_restarts(ray_head, system, serve_port):
    ids = [system.submit("llm.generate", {"input": f"more {i}"}, swarm="work") for i in range(2)]
    for task_id in ids:
        usage = system.result(task_id, timeout_s=60).usage
        # One request, billed as the provider reported it, at the price table's rates.
        assert usage.model_dump() == {
            "requests": 1,
            "prompt_tokens": USAGE["prompt_tokens"],
            "completion_tokens": USAGE["completion_tokens"],
            "cost_microusd": 100 * 2 + 50 * 10,
        }
    authority = ray.get_actor(authority_name(SYSTEM), namespace=SYSTEM)
    agents_key = next(r["id"] for r in ray.get(authority.list.remote()) if r["name"] == "agents")

    def sums():
        tasks = [r for r in system.usage("swarm")[:-1] if r["swarm"] != OUTSIDE_TASKS]
        swarms = {f: sum(r[f] for r in tasks) for f in FIELDS}
        (key_row,) = [r for r in system.usage("key") if r["key"] == agents_key]
        return swarms, {f: key_row[f] for f in FIELDS}

    # The agents' key is spent only by tasks here: the gateway's sum for it is the swarms' sum
    # (the replicas send theirs within a second).
    swarms, keys = wait_until(lambda: (lambda s, k: (s, k) if s == k else None)(*sums()), 30)
    assert swarms["requests"] >= 2 and swarms["prompt_tokens"] == swarms["requests"] * USAGE["prompt_tokens"]
    by_model = system.usage("model")
    assert [r["model"] for r in by_model] == ["scripted", "total"]
    assert by_model[-1]["cost_usd"] == pytest.approx(swarms["cost_microusd"] / 1e6)

    # Both ledgers are journaled: a queen and the authority killed (Ray restarts them) keep them.
    ray.kill(ray.get_actor("queen:work", namespace=SYSTEM), no_restart=False)
    ray.kill(authority, no_restart=False)
    assert wait_until(lambda: sums() == (swarms, keys), 60, "the ledgers after the restarts")

    # /v1/usage reads that ledger too: the whole service's, and a replica replaced by Serve
    # (here the gateway, killed) loses none of it.
    gateways = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve" and a["name"].startswith(f"SERVE_REPLICA::{SYSTEM}-ai#gateway#")
    ]
    assert gateways
    for name in gateways:
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    admin = ray.get(authority.create.remote({"name": "ledger reader", "scopes": ["admin"]}))
    url = f"http://127.0.0.1:{serve_port}/ops-tests/v1/usage"

    def served():
        r = httpx.get(url, headers={"Authorization": f"Bearer {admin['key']}"}, timeout=10)
        return r.json()["callers"].get(agents_key, {}).get("scripted") if r.status_code == 200 else None

    assert wait_until(served, 60, "/v1/usage from a new gateway replica") == {
        **{f: keys[f] for f in FIELDS if f != "cost_microusd"},
        "cost_usd": keys["cost_microusd"] / 1e6,
    }

    # The CLI prints the same rows.
    cli = swarm_cli(ray_head, "usage", "--by", "key", "--json")
    assert cli.returncode == 0, cli.stderr
    (row,) = [r for r in json.loads(cli.stdout) if r["key"] == agents_key]
    assert {f: row[f] for f in FIELDS} == keys and row["name"] == "agents"
    since = swarm_cli(ray_head, "usage", "--since", "1s")
    assert since.returncode == 0 and "SWARM" in since.stdout and "total" in since.stdout

    # The views add up: what the service charged besides the tasks (here a request of the admin
    # key's own) is the per-swarm view's `(outside tasks)` row, so every view's total is the same.
    asked = httpx.post(
        f"http://127.0.0.1:{serve_port}/ops-tests/v1/chat/completions",
        headers={"Authorization": f"Bearer {admin['key']}"},
        json={"model": "scripted", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=30,
    )
    assert asked.status_code == 200, asked.text

    def totals():
        per_swarm, per_key = system.usage("swarm"), system.usage("key")
        same = all(per_swarm[-1][f] == per_key[-1][f] for f in FIELDS)
        return per_swarm if same and per_key[-1]["requests"] > keys["requests"] else None

    per_swarm = wait_until(totals, 30, "the per-swarm total to match the per-key total")
    (outside,) = [r for r in per_swarm if r["swarm"] == OUTSIDE_TASKS]
    assert outside["requests"] >= 1


def test_status_watch_shows_live_frames_of_the_running_system(system):
    out = io.StringIO()
    watch(SYSTEM, interval_s=0.2, rounds=3, console=Console(file=out, width=200))
    frames = out.getvalue()
    for seen in ("system ops-tests", "work", "other", "llm.generate", "test.count", "AI service", "kb"):
        assert seen in frames, seen


def test_up_reports_its_progress_until_each_stage_is_complete(system):
    last = {}
    for what, done, total in system.progress:
        assert 0 <= done <= total or total == 0, (what, done, total)
        last[what] = (done, total)
    assert last["memory stores loaded"] == (1, 1)
    assert last["agents started"][0] == last["agents started"][1] >= 5
    for app in (f"{SYSTEM}-ai", f"{SYSTEM}-facts"):
        done, total = last[f"replicas of {app}"]
        assert done == total >= 1, (app, done, total)


def test_a_bulk_memory_load_reports_its_progress_and_lands_whole(system, tmp_path):
    store = ray.get_actor("memory:work", namespace=SYSTEM)
    # The store sweeps every 30 s (consolidation among them); each count below follows a
    # sweep of its own, so that it does not depend on where the periodic one falls.
    ray.get(store.sweep.remote())
    before = ray.get(store.stats.remote())["records"]
    path = tmp_path / "bulk.jsonl"
    # Short-term: these templated texts are near-duplicates to the embedder (cosine >= 0.97),
    # which a sweep would merge if they were long-term; the test is of loading, not of that.
    lines = ({"text": f"bulk note number {i} about topic {i % 7}", "tier": "short_term"} for i in range(300))
    path.write_text("\n".join(map(json.dumps, lines)))
    progress = []
    stored = load_records(
        SYSTEM, "work", records_of_file(str(path), "work"), 128, lambda *p: progress.append(p)
    )
    assert stored == 300 and progress == [("records stored", n, 300) for n in (128, 256, 300)]
    ray.get(store.sweep.remote())
    assert ray.get(store.stats.remote())["records"] == before + 300
    # Loading the file again replaces the same ids: nothing is repeated.
    load_records(SYSTEM, "work", records_of_file(str(path), "work"))
    ray.get(store.sweep.remote())
    assert ray.get(store.stats.remote())["records"] == before + 300


def test_a_keys_budgets_are_gauges_of_the_share_granted(ray_head, system, serve_port):
    authority = ray.get_actor(authority_name(SYSTEM), namespace=SYSTEM)
    spec = {"name": "budgeted", "scopes": ["ai:invoke"], "budget_tokens": 10_000, "budget_usd": 1.0}
    made = ray.get(authority.create.remote(spec))
    key_id, auth = made["record"]["id"], {"Authorization": f"Bearer {made['key']}"}
    body = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    chat = f"http://127.0.0.1:{serve_port}/ops-tests{CHAT}"
    # The gateway replica learns of the key within a poll of the authority.
    wait_until(lambda: httpx.post(chat, json=body, headers=auth, timeout=30).status_code == 200, 30)

    def shares():
        s = scrape(ray_head["metrics"])
        found = {
            lbl["budget"]: v
            for lbl, v in s.get("ray_swarmray_key_budget_used_ratio", [])
            if lbl["system"] == SYSTEM and lbl["key"] == key_id
        }
        return found if found.keys() == {"tokens", "usd"} else None

    found = wait_until(shares, 30, "the key's budget gauges")
    # At least what the answer billed (and a replica's unspent lease counts until given back).
    assert USAGE["total_tokens"] / 10_000 <= found["tokens"] < 0.9
    assert (100 * 2 + 50 * 10) / 1e6 <= found["usd"] < 0.9
