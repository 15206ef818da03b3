"""Shared fixtures: a local Ray head started once per session, and per-test systems."""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

# Ray >= 2.59 turns token auth on for local heads, but a driver given an explicit address sends
# the token only when RAY_AUTH_MODE says so, and Ray reads it once, at import.
os.environ.setdefault("RAY_AUTH_MODE", "token")
# In token mode `ray start --head` refuses to run without a token, and a fresh machine has none
# (`ray.init()` would write ~/.ray/auth_token, `ray start` does not): the session brings its
# own, in the environment, so that every head, driver, CLI call and job it starts shares it.
if (
    os.environ["RAY_AUTH_MODE"] == "token"
    and not os.environ.get("RAY_AUTH_TOKEN")
    and not os.environ.get("RAY_AUTH_TOKEN_PATH")
    and not (Path.home() / ".ray" / "auth_token").exists()
):
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)

from cluster._private.connection import HEAD_ENV

ROOT = Path(__file__).resolve().parent.parent
RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
_ns = itertools.count()


def pytest_collection_modifyitems(items):
    """Tests marked `before_head` need a machine with no Ray running: run them first."""
    items.sort(key=lambda item: item.get_closest_marker("before_head") is None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_head():
    """A `ray start --head` cluster with 8 logical CPUs and 2 logical GPUs, exporting Prometheus
    metrics.

    Started as a separate head (not `ray.init()` in this process) so that CLI and
    `ray job submit` tests reach the same cluster the in-process tests use.
    """
    import ray

    port, dashboard, metrics = free_port(), free_port(), free_port()
    # Workers import test agents from tests/, and jobs find this Python first on PATH.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        **HEAD_ENV,
        # Workers report metrics every second (not 10), so a test finds them soon after the fact.
        "RAY_metrics_report_interval_ms": "1000",
    }
    subprocess.run(
        [
            RAY,
            "start",
            "--head",
            f"--port={port}",
            f"--dashboard-port={dashboard}",
            f"--metrics-export-port={metrics}",
            "--num-cpus=8",
            "--num-gpus=2",
            "--disable-usage-stats",
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    ray.init(address=address, namespace="tests", log_to_driver=False)
    session, gcs_address = ray.get_runtime_context().get_session_name(), ray.get_runtime_context().gcs_address
    yield {
        "address": address,
        "dashboard": f"http://127.0.0.1:{dashboard}",
        "metrics": f"http://127.0.0.1:{metrics}/metrics",
        "env": env,
    }
    ray.shutdown()
    from cluster._private.connection import stop_head

    stop_head(session, gcs_address)  # this head only: never every Ray on the machine


@pytest.fixture
def namespace() -> str:
    """A fresh Ray namespace per test, so systems never share actors."""
    return f"t{os.getpid()}-{next(_ns)}"


@contextlib.contextmanager
def running_system(config):
    """Brings `config` up on the session cluster and always takes it down."""
    from cluster import Client, down, up

    up(config)
    try:
        yield Client(config.namespace)
    finally:
        down(config.namespace)
