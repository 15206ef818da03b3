"""The alerting rules (deploy/prometheus/alerts.yaml) in a real Prometheus scraping a running
system: each condition is caused for real (a pool's agents killed for good, a swarm escalating,
an AI backend's breaker opened, a key's budget spent) and its alert must fire, with the labels
that say where. The rules are the file's, with only `for:` shortened to seconds.

JournalNotCompacting and FactsExtractionBehind are not caused here (a compaction that fails or an
extractor that stalls needs a fault inside another process); promtool's tests cover them
(tests/unit/test_alert_rules.py)."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import httpx
import pytest
import ray
import yaml

from cluster import load_config
from cluster._private.credentials import user_key
from models._private.core.names import authority_name
from tests.conftest import running_system
from tests.prometheus import Prometheus, prometheus_or_skip, session_dir
from tests.scripted_provider import ScriptedProvider
from tests.unit.test_alert_rules import RULES
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
FOR = "2s"  # each rule's `for:`, so that an alert fires a few evaluations (1 s) after its cause


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


def test_each_alert_fires_when_its_condition_is_caused(ray_head, serve_port, namespace, tmp_path):
    prometheus_or_skip()
    rules = fast_rules(tmp_path)
    gate = tmp_path / "gate"
    provider = ScriptedProvider()
    provider.respond = lambda body: (500, "the backend is down") if body["model"] == "broken" else "fine"
    config = load_config(
        {
            "namespace": namespace,
            "ai": {
                "port": serve_port,
                "route_prefix": f"/{namespace}",
                "providers": {
                    "ok": {"base_url": provider.url, "model": "m"},
                    "bad": {"base_url": provider.url, "model": "broken"},
                },
                # Opened by three failures, and kept open for the whole test.
                "breaker": {"failure_threshold": 3, "cooldown_s": 3600},
                "embeddings": None,
                "auth": {"path": str(tmp_path / "auth")},
            },
            "swarms": {
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
        Prometheus(session_dir(), rules=[str(rules)]) as prometheus,
        running_system(config),
    ):
        # A pool whose agents are killed and can no longer start: restarted three times, the
        # pool gives up and keeps them dead.
        gate.touch()
        fragile = ray.get_actor("queen:fragile", namespace=namespace)
        hosts = ray.get(fragile.hosts.remote())
        for _, host, _ in hosts:
            ray.kill(host, no_restart=True)
        ray.get(fragile.replace_hosts.remote([host_id for host_id, *_ in hosts], "killed by the test"))
        # A swarm that allows no restart escalates at its first failed host.
        brittle = ray.get_actor("queen:brittle", namespace=namespace)
        (host_id, host, _), *_ = ray.get(brittle.hosts.remote())
        ray.kill(host, no_restart=True)
        ray.get(brittle.replace_hosts.remote([host_id], "killed by the test"))

        # An AI backend that answers 500 three times in a row: its breaker opens.
        ai = f"http://127.0.0.1:{serve_port}/{namespace}/v1/chat/completions"
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        user = {"Authorization": f"Bearer {user_key(namespace)}"}
        for _ in range(3):
            answer = httpx.post(ai, json={**body, "model": "bad"}, headers=user, timeout=60)
            assert answer.status_code >= 500, answer.text

        # A key with a budget of 100 tokens, spent by one answer (billed 150).
        authority = ray.get_actor(authority_name(namespace), namespace=namespace)
        spec = {"name": "small", "scopes": ["ai:invoke"], "budget_tokens": 100}
        made = ray.get(authority.create.remote(spec))
        small = {"Authorization": f"Bearer {made['key']}"}
        wait_until(
            lambda: (
                httpx.post(ai, json={**body, "model": "ok"}, headers=small, timeout=60).status_code == 200
            ),
            30,
            "an answer with the new key",
        )

        expected = {
            ("PoolWithoutLiveAgent", (("pool", "p"), ("swarm", "fragile"))),
            ("SwarmUnhealthy", (("swarm", "brittle"),)),
            ("AIBackendBreakerOpen", (("backend", "bad"),)),
            ("KeyNearBudget", (("budget", "tokens"), ("key", made["record"]["id"]))),
        }
        keys = {"pool", "swarm", "backend", "budget", "key"}

        def firing() -> set[tuple[str, tuple[tuple[str, str], ...]]]:
            return {
                (a["labels"]["alertname"], tuple(sorted((k, v) for k, v in a["labels"].items() if k in keys)))
                for a in prometheus.alerts()
                if a["state"] == "firing" and a["labels"].get("system") == namespace
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
            if alert["labels"].get("system") == namespace and alert["state"] == "firing":
                assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        assert [(r["name"], r["lastError"]) for r in prometheus.rules() if r["health"] != "ok"] == []
