"""The alerting rules (deploy/prometheus/alerts.yaml), checked and tested by Prometheus's own
promtool: every rule parses, each fires on its condition after its `for:` and not on the
look-alikes (deploy/prometheus/alerts_test.yaml), and each names only metrics swarmray exports.
And a gauge a rule reads whose value takes some counting: a key's budget share."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from serve._private.auth import authority as authority_module
from serve._private.auth.authority import KeyAuthority
from serve._private.auth.config import AuthConfig
from tests.conftest import ROOT
from tests.unit.test_grafana_dashboard import NAME_IN_EXPR, exported, scraped

RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yaml"
ALERTS = {
    "SwarmUnhealthy",
    "SwarmDegraded",
    "PoolWithoutLiveAgent",
    "DelegationBreakerOpen",
    "AIBackendBreakerOpen",
    "JournalNotCompacting",
    "KeyNearBudget",
    "FactsExtractionBehind",
}


def promtool(*args: str) -> subprocess.CompletedProcess:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed: apt-get install prometheus (.ci/run installs it)")
    return subprocess.run([found, *args], capture_output=True, text=True, timeout=60)


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules():
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


def test_each_alert_fires_on_its_condition_and_not_on_look_alikes():
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every alert has a case where it fires, so a rule added without a test fails here.
    cases = [
        case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]
    ]
    assert {case["alertname"] for case in cases if case["exp_alerts"]} == ALERTS


def test_the_rule_tests_fail_when_a_rule_waits_longer_than_they_expect(tmp_path: Path):
    # The same tests against rules whose SwarmUnhealthy waits a minute longer: promtool must
    # see the alert missing at 4m, so the tests do hold the rules to their `for:`.
    text = RULES.read_text()
    slower = text.replace(
        "(ray_swarmray_swarm_health) >= 2\n        for: 2m",
        "(ray_swarmray_swarm_health) >= 2\n        for: 3m",
    )
    assert slower != text
    (tmp_path / "alerts.yaml").write_text(slower)
    shutil.copy(RULE_TESTS, tmp_path / "alerts_test.yaml")
    tested = promtool("test", "rules", str(tmp_path / "alerts_test.yaml"))
    assert tested.returncode != 0 and "SwarmUnhealthy" in tested.stdout + tested.stderr


def test_every_rule_says_what_and_why_and_names_only_exported_metrics():
    found = rules()
    assert {rule["alert"] for rule in found} == ALERTS
    names = scraped(exported())
    for rule in found:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"].keys() == {"summary", "description"}, rule["alert"]
        used = NAME_IN_EXPR.findall(rule["expr"])
        assert used, rule["alert"]
        assert [n for n in used if n not in names] == [], rule["alert"]


def test_a_keys_budget_share_counts_its_window_and_goes_as_the_window_moves_on(tmp_path, monkeypatch):
    shown: dict[tuple[str, str], float] = {}

    class Recorder:
        def budget(self, key_id: str, budget: str, ratio: float) -> None:
            shown[(key_id, budget)] = ratio

    monkeypatch.setattr(authority_module, "authority_metrics", lambda system: Recorder())
    now = [1_000_000.0]
    authority = KeyAuthority(
        str(tmp_path / "auth"), AuthConfig(path=str(tmp_path)).model_dump(), clock=lambda: now[0]
    )
    spec = {"scopes": ["ai:invoke"], "budget_tokens": 1000, "budget_usd": 2.0, "budget_period_s": 60}
    key_id = authority.create({"name": "b", **spec})["record"]["id"]
    other = authority.create({"name": "o", **spec})["record"]["id"]

    grant = asyncio.run(authority.acquire(key_id, "budget", 100))
    assert grant["units"] == 100 and shown[(key_id, "tokens")] == 0.1
    asyncio.run(authority.acquire(key_id, "budget", 850, force=True))  # used beyond a reservation
    assert shown[(key_id, "tokens")] == 0.95
    authority.release(key_id, "budget", grant["window"], 50)  # a lease's unspent rest
    assert shown[(key_id, "tokens")] == 0.9
    asyncio.run(authority.acquire(key_id, "cost", 500_000))  # micro-dollars: $0.50 of $2
    assert shown[(key_id, "usd")] == 0.25
    asyncio.run(authority.acquire(other, "budget", 600))
    assert shown[(other, "tokens")] == 0.6

    # A minute and two slots later nothing granted then counts; the replicas' next poll says so.
    now[0] += 62
    asyncio.run(authority.changes(-1, 0))
    assert shown[(key_id, "tokens")] == shown[(key_id, "usd")] == shown[(other, "tokens")] == 0
    # A revoked key shows nothing used: it can spend no more.
    asyncio.run(authority.acquire(other, "budget", 950))
    assert shown[(other, "tokens")] == 0.95
    authority.revoke(other)
    authority.show_budgets()
    assert shown[(other, "tokens")] == 0
