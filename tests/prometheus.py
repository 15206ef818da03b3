"""A real Prometheus for the tests: started on loopback from the prometheus.yml Ray writes into
its session directory (scraping every node's metrics export port, as README "Operations" tells
users to), with two-second scrapes and one-second rule evaluations, and the dashboard's variables
filled in as Grafana fills them. It starts no Ray: it scrapes the one the tests run."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port
from tests.waiting import wait_until

__all__ = ["Prometheus", "fill", "finite", "prometheus_or_skip", "ray_prometheus_yml", "session_dir"]

MISSING = "Prometheus is not installed: apt-get install prometheus (.ci/run installs it)"
# A test sees a value a scrape or two after Ray's metrics agent has it. Scraped every second beside
# a module's own scrapes, the agent (one Python process, on a busy 2-core machine in CI) answered
# them too late: test_operations' scrapes timed out in the full suite.
SCRAPE_INTERVAL = "2s"
EVALUATION_INTERVAL = "1s"  # the rules' `for:` in the live test is counted in these
# Grafana's escape of a regex variable's value inside a PromQL string (prometheusRegularEscape):
# the metacharacters get a backslash, written twice in the string literal.
_REGEX_META = re.compile(r"([\\$^*{}\[\]'+?.()|])")


def prometheus_or_skip() -> str:
    """The `prometheus` binary, or the test is skipped with how to install it."""
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip(MISSING)
    return found


def session_dir() -> str:
    """The session directory of the Ray cluster this process is connected to."""
    import ray

    return ray._private.worker._global_node.get_session_dir_path()


def ray_prometheus_yml(session_dir: str) -> Path:
    """The prometheus.yml Ray's dashboard writes for its session (file-based discovery of every
    node's metrics export port)."""
    return Path(session_dir) / "metrics" / "prometheus" / "prometheus.yml"


def fill(expr: str, *, system: str, session: str, swarm: str = ".*", window: str = "15m") -> str:
    """A dashboard query as Grafana sends it: `$system` and `$SessionName` set to one value
    each (regex-escaped), `$swarm` to a regex (`.*` is the dashboard's All), and the rate
    interval and the range to `window`, wide enough to hold a test module's work (a rate over
    a window with no increase is 0, and a quantile of it NaN)."""
    values = {
        "$SessionName": _REGEX_META.sub(r"\\\\\1", session),
        "$system": _REGEX_META.sub(r"\\\\\1", system),
        "$swarm": swarm,
        "$__rate_interval": window,
        "$__range": window,
    }
    # Longest first: `$swarm` must not eat the start of a longer name.
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(name, values[name])
    return expr


def finite(result: list[dict[str, Any]]) -> list[float]:
    """The finite values of an instant vector (a quantile over no observations is NaN)."""
    values = [float(r["value"][1]) for r in result]
    return [v for v in values if math.isfinite(v)]


class Prometheus:
    """A Prometheus process on 127.0.0.1 scraping the Ray session whose directory it is given,
    with `rules` (rule files) loaded; a context manager that stops it (by its pid) and deletes
    its data.

    Args:
        session_dir: Ray's session directory (its prometheus.yml is the configuration).
        rules: Rule files to load (`rule_files`).
    """

    def __init__(self, session_dir: str, rules: list[str] | None = None):
        self.binary = prometheus_or_skip()
        self.source = ray_prometheus_yml(session_dir)
        self.rule_files = list(rules or [])
        self.url = ""
        self._dir: str | None = None
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> Prometheus:
        self._dir = tempfile.mkdtemp(prefix="swarmray-prometheus-")
        config = yaml.safe_load(self.source.read_text())
        config["global"] = {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": EVALUATION_INTERVAL,
        }
        if self.rule_files:
            config["rule_files"] = self.rule_files
        path = os.path.join(self._dir, "prometheus.yml")
        Path(path).write_text(yaml.safe_dump(config))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with open(os.path.join(self._dir, "log"), "w") as log:  # the process keeps its own copy
            self._process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={path}",
                    f"--storage.tsdb.path={os.path.join(self._dir, 'data')}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        try:
            wait_until(self._ready, 30, "Prometheus to be ready")
        except BaseException:
            self.__exit__()
            raise
        return self

    def _ready(self) -> bool:
        if self._process.poll() is not None:
            raise AssertionError(f"Prometheus exited {self._process.returncode}: {self.log()}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        """What Prometheus wrote to stderr (warnings and errors)."""
        return Path(self._dir, "log").read_text() if self._dir else ""

    def __exit__(self, *exc: Any) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _get(self, path: str, **params: Any) -> dict[str, Any]:
        return httpx.get(f"{self.url}{path}", params=params, timeout=30).json()

    def query(self, expr: str) -> dict[str, Any]:
        """`/api/v1/query` of `expr` now: {status, data: {resultType, result}} or {status,
        errorType, error}."""
        return self._get("/api/v1/query", query=expr)

    def vector(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector `expr` evaluates to now; fails on an error."""
        answer = self.query(expr)
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def label_values(self, label: str, match: str) -> list[str]:
        """The values `label` takes on the series `match` selects (Grafana's `label_values`)."""
        answer = self._get(f"/api/v1/label/{label}/values", **{"match[]": match})
        assert answer["status"] == "success", answer
        return answer["data"]

    def scraped_since(self, unix_s: float) -> bool:
        """Whether every target has been scraped since `unix_s` (a scrape's samples carry the
        time it began)."""
        result = self.vector("min(timestamp(up))")
        return bool(result) and float(result[0]["value"][1]) >= unix_s

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert pending or firing: {labels, annotations, state, activeAt, value}."""
        return self._get("/api/v1/alerts")["data"]["alerts"]

    def rules(self) -> list[dict[str, Any]]:
        """Every alerting rule with its `health` (ok, err, unknown) and `lastError`."""
        groups = self._get("/api/v1/rules", type="alert")["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]
