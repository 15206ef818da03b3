"""The alerting rules (deploy/prometheus/alerts.yaml) and the Grafana dashboard
(deploy/grafana/swarmray.json) in a real Prometheus scraping a running system, one Prometheus and
one system for both, both stopped at the module's end.

The system first does a little of everything the dashboard shows (a task retried, one delegated,
memory written and refused, an answer of the AI service, a document in the facts service and
requests refused at its door), twice, with a scrape between; then each alert's condition is
caused for real (a pool's agents killed for good, a swarm escalating, an AI backend's breaker
opened, a key's budget spent). Each alert must fire, with the labels that say where, and each
panel's query must evaluate, returning a value for the metrics the work produced. The rules
are the file's, with only `for:` shortened to seconds.

JournalNotCompacting and FactsExtractionBehind are not caused here (a compaction that fails or an
extractor that stalls needs a fault inside another process); promtool's tests cover them
(tests/unit/test_alert_rules.py)."""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import ray
import yaml

from cluster import load_config
from cluster._private.credentials import user_key
from models._private.core.names import authority_name
from tests.conftest import running_system
from tests.prometheus import Prometheus, fill, finite, prometheus_or_skip, session_dir
from tests.scripted_provider import ScriptedProvider
from tests.unit.test_alert_rules import RULES
from tests.unit.test_grafana_dashboard import NAME_IN_EXPR, _dashboard, _targets, _variable_query
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
SYSTEM = "alerts-tests"
FOR = "2s"  # each rule's `for:`, so that an alert fires a few evaluations (1 s) after its cause
REPORTED_S = 2.0  # processes report metrics to Ray's agent every second (tests/conftest.py)


def fast_rules(directory: Path) -> Path:
    """A copy of alerts.yaml whose rules wait FOR instead of minutes, and differ in nothing else."""
    text = RULES.read_text()
    fast = re.sub(r"^(\s+for: )\S+$", rf"\g<1>{FOR}", text, flags=re.MULTILINE)
    path = directory / "alerts.yaml"
    path.write_text(fast)

    def rules(text: str) -> list[dict]:
        return [r for g in yaml.safe_load(text)["groups"] for r in g["rules"]]

    original, copied = rules(text), rules(fast)
    assert [{**r, "for": FOR} for r in original] == copied
    return path


class Live(NamedTuple):
    """The module's Prometheus over its running system, once the work is done and the alerts'
    conditions caused."""

    prometheus: Prometheus
    spent_key: str  # the id of the key whose budget one answer spent


@pytest.fixture(scope="module")
def live(ray_head, serve_port, tmp_path_factory):
    prometheus_or_skip()
    directory = tmp_path_factory.mktemp("alerts")
    rules = fast_rules(directory)
    gate = directory / "gate"
    auth = {"path": str(directory / "auth")}
    provider = ScriptedProvider()
    provider.respond = lambda body: (500, "the backend is down") if body["model"] == "broken" else "fine"
    config = load_config(
        {
            "namespace": SYSTEM,
            "ai": {
                "port": serve_port,
                "route_prefix": f"/{SYSTEM}",
                "providers": {
                    "ok": {"base_url": provider.url, "model": "m"},
                    "bad": {"base_url": provider.url, "model": "broken"},
                },
                "prices": {"ok": {"input_usd_per_million_tokens": 2, "output_usd_per_million_tokens": 10}},
                # Opened by three failures, and kept open for the whole module.
                "breaker": {"failure_threshold": 3, "cooldown_s": 3600},
                "embeddings": None,
                "auth": auth,
            },
            "facts": {
                "port": serve_port,
                "route_prefix": f"/{SYSTEM}-facts",
                "path": str(directory / "facts"),
                "namespaces": {"kb": {"extractor": "none", "num_cpus": 0}},
                "auth": auth,
            },
            "swarms": {
                "work": {  # the dashboard's tasks, memory and journal rows; agents in the queen
                    "queen": {"max_retries": 1, "retry_backoff_s": 0.01},
                    "journal": {"compact_after_mb": 0.001},  # compacts within the module's work
                    "memory": {"memory": {"path": str(directory / "memory")}},
                    "pools": {
                        "flaky": {"colocate": True, "agent": {"class": "tests.agents:FlakyAgent"}},
                        "memory": {"colocate": True, "agent": {"class": "actors:MemoryAgent"}},
                    },
                },
                "fragile": {
                    "pools": {
                        "p": {"agent": {"class": "tests.agents:FragileAgent", "params": {"gate": str(gate)}}}
                    },
                },
                "brittle": {  # escalates at its first restart, and stays failed
                    "supervision": {"max_restarts": 0, "recover_after_s": None},
                    "pools": {"sleep": {"agent": {"class": "tests.agents:SleepAgent"}}},
                },
            },
        }
    )
    with (
        contextlib.closing(provider),
        Prometheus(session_dir(), rules=[str(rules)]) as prometheus,  # before: it sees all of it
        running_system(config) as client,
    ):
        do_the_work(client, serve_port, "1")
        # A counter is born with its first value, which rate() does not count as an increase: the
        # work is done again once Prometheus has seen it, or the latency panels' quantiles are NaN.
        done = time.time() + REPORTED_S
        wait_until(lambda: prometheus.scraped_since(done), 30, "a scrape after the first round of work")
        do_the_work(client, serve_port, "2")
        yield Live(prometheus, cause_the_alerts(serve_port, gate))


def do_the_work(client: Any, serve_port: int, round_: str) -> None:
    """A little of everything the dashboard shows, before anything is broken."""
    note = {"text": "Ray restarts detached actors.", "id": f"n{round_}"}
    tasks = [
        client.submit("test.flaky", {"fail_times": 1}, swarm="work"),  # retried once
        client.submit("test.sleep", {"s": 0}, swarm="work"),  # only brittle offers it: delegated
        client.submit("memory.store", note, swarm="work"),
    ]
    assert [client.result(t, timeout_s=120).status.value for t in tasks] == ["succeeded"] * 3
    # A memory write the store refuses (a namespace it does not hold) is an operation error.
    store = ray.get_actor("memory:work", namespace=SYSTEM)
    with pytest.raises(ray.exceptions.RayTaskError):
        ray.get(store.upsert.remote([{"id": "x", "namespace": "elsewhere", "text": "t"}]))
    key = {"Authorization": f"Bearer {user_key(SYSTEM)}"}
    ai = f"http://127.0.0.1:{serve_port}/{SYSTEM}/v1/chat/completions"
    body = {"model": "ok", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    assert httpx.post(ai, json=body, headers=key, timeout=60).status_code == 200
    # The facts service: a document in, one not found, and a request without a key refused.
    facts = f"http://127.0.0.1:{serve_port}/{SYSTEM}-facts/v1/namespaces/kb"
    doc = {"id": f"d{round_}", "title": "Ray", "text": "Ray restarts detached actors."}
    assert httpx.post(f"{facts}/documents", json=doc, headers=key, timeout=60).status_code == 201
    assert httpx.get(f"{facts}/documents/nope", headers=key, timeout=60).status_code == 404
    assert httpx.get(facts, timeout=60).status_code == 401


def cause_the_alerts(serve_port: int, gate: Path) -> str:
    """Causes each alert's condition; returns the id of the key whose budget is spent."""
    # A pool whose agents are killed and can no longer start: restarted three times, the pool
    # gives up and keeps them dead.
    gate.touch()
    fragile = ray.get_actor("queen:fragile", namespace=SYSTEM)
    hosts = ray.get(fragile.hosts.remote())
    for _, host, _ in hosts:
        ray.kill(host, no_restart=True)
    ray.get(fragile.replace_hosts.remote([host_id for host_id, *_ in hosts], "killed by the test"))
    # A swarm that allows no restart escalates at its first failed host.
    brittle = ray.get_actor("queen:brittle", namespace=SYSTEM)
    (host_id, host, _), *_ = ray.get(brittle.hosts.remote())
    ray.kill(host, no_restart=True)
    ray.get(brittle.replace_hosts.remote([host_id], "killed by the test"))

    # An AI backend that answers 500 three times in a row: its breaker opens.
    ai = f"http://127.0.0.1:{serve_port}/{SYSTEM}/v1/chat/completions"
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    user = {"Authorization": f"Bearer {user_key(SYSTEM)}"}
    for _ in range(3):
        answer = httpx.post(ai, json={**body, "model": "bad"}, headers=user, timeout=60)
        assert answer.status_code >= 500, answer.text

    # A key with a budget of 100 tokens, spent by one answer (billed 150).
    authority = ray.get_actor(authority_name(SYSTEM), namespace=SYSTEM)
    spec = {"name": "small", "scopes": ["ai:invoke"], "budget_tokens": 100}
    made = ray.get(authority.create.remote(spec))
    small = {"Authorization": f"Bearer {made['key']}"}
    wait_until(
        lambda: httpx.post(ai, json={**body, "model": "ok"}, headers=small, timeout=60).status_code == 200,
        30,
        "an answer with the new key",
    )
    return made["record"]["id"]


def test_each_alert_fires_when_its_condition_is_caused(live):
    prometheus = live.prometheus
    expected = {
        ("PoolWithoutLiveAgent", (("pool", "p"), ("swarm", "fragile"))),
        ("SwarmUnhealthy", (("swarm", "brittle"),)),
        ("AIBackendBreakerOpen", (("backend", "bad"),)),
        ("KeyNearBudget", (("budget", "tokens"), ("key", live.spent_key))),
    }
    keys = {"pool", "swarm", "backend", "budget", "key"}

    def firing() -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        return {
            (a["labels"]["alertname"], tuple(sorted((k, v) for k, v in a["labels"].items() if k in keys)))
            for a in prometheus.alerts()
            if a["state"] == "firing" and a["labels"].get("system") == SYSTEM
        }

    fired: set = set()

    def all_fired() -> bool:
        fired.clear()
        fired.update(firing())
        return expected <= fired

    with contextlib.suppress(AssertionError):
        wait_until(all_fired, 90, "the alerts to fire")
    assert expected - fired == set(), fired
    # Nothing caused the others: no journal left uncompacted, no extractor behind (a swarm
    # whose hosts restart is degraded meanwhile, which may have lasted the short `for:`).
    assert {name for name, _ in fired} - {name for name, _ in expected} <= {"SwarmDegraded"}
    for alert in prometheus.alerts():
        if alert["labels"].get("system") == SYSTEM and alert["state"] == "firing":
            assert alert["annotations"]["summary"] and alert["annotations"]["description"]
    assert [(r["name"], r["lastError"]) for r in prometheus.rules() if r["health"] != "ok"] == []


def test_every_dashboard_query_answers_in_a_real_prometheus(live):
    """Each panel's query, with the dashboard's variables filled in as Grafana fills them, must
    evaluate, and return a finite value when every metric it names has series Prometheus can
    see: now, for an instant selector (a gauge of an actor since killed has none), and over the
    window, for a range."""
    prometheus = live.prometheus
    session = ray.get_runtime_context().get_session_name()
    dashboard = _dashboard()
    variables = {v["name"]: _variable_query(v) for v in dashboard["templating"]["list"]}

    def label_values(query: str) -> list[str]:
        match, label = re.fullmatch(r"label_values\((.*), (\w+)\)", query).groups()
        return prometheus.label_values(label, fill(match, system=SYSTEM, session=session))

    def variables_answer() -> bool:
        return (
            session in label_values(variables["SessionName"])
            and SYSTEM in label_values(variables["system"])
            and {"work", "fragile", "brittle"} <= set(label_values(variables["swarm"]))
        )

    wait_until(variables_answer, 30, "the dashboard's variables to list this session, system and swarms")
    # Everything the dashboard shows was produced here, so no panel below is let off; the names
    # come from Prometheus, over all it stored (series of killed actors included).
    produced_here = f'{{__name__=~"ray_swarmray_.+",system="{SYSTEM}"}}'
    shown = {name for _, target in _targets(dashboard) for name in NAME_IN_EXPR.findall(target["expr"])}
    produced: set[str] = set()

    def all_produced() -> bool:  # the last of the work reaches Prometheus a scrape or two later
        produced.update(prometheus.label_values("__name__", produced_here))
        return shown <= produced

    with contextlib.suppress(AssertionError):
        wait_until(all_produced, 30, "every metric the dashboard shows in Prometheus")
    assert shown - produced == set()

    def problems() -> list[str]:
        found = []
        live_names = {
            r["metric"]["__name__"] for r in prometheus.vector(f"group by (__name__) ({produced_here})")
        }
        for title, target in _targets(dashboard):
            expr = fill(target["expr"], system=SYSTEM, session=session)
            answer = prometheus.query(expr)
            seen_by_it = produced if "[" in expr else live_names
            if answer["status"] != "success":
                found.append(f"{title}: {expr}: {answer['errorType']}: {answer['error']}")
            elif set(NAME_IN_EXPR.findall(expr)) <= seen_by_it and not finite(answer["data"]["result"]):
                found.append(f"{title}: {expr}: no finite value in {answer['data']['result'][:3]}")
        return found

    seen: list[str] = []

    def every_query_answers() -> bool:
        seen[:] = problems()
        return not seen

    with contextlib.suppress(AssertionError):
        wait_until(every_query_answers, 30, "every panel's query to answer")
    assert seen == [], "\n".join(seen)
