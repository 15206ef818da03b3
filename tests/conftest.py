"""Shared fixtures: a local Ray head started once per session, and per-test systems."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The suite runs the program users run, in the environment a user's shell has: Ray's token auth
# as Ray sets it up by itself, not through variables of the suite's own. A developer's own
# RAY_AUTH_* would change what is tested, so they go; the tests about them set them.
for _key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
    os.environ.pop(_key, None)
# A home of the session's own, as a user's is once the quick start's demo has run: its
# `ray.init()` leaves Ray's token in ~/.ray/auth_token, which turns token auth on for every head
# `ray start` runs there afterwards (Ray >= 2.59). Systems' default journals (~/.swarmray) go
# there too, not into the developer's home; built models stay in the developer's cache.
USER_HOME = Path(tempfile.mkdtemp(prefix="swarmray-tests-home-"))
os.environ.setdefault("XDG_CACHE_HOME", str(Path.home() / ".cache"))
os.environ["HOME"] = str(USER_HOME)
from ray._private.authentication.authentication_token_generator import (  # noqa: E402  (Ray reads the
    generate_new_authentication_token,  # environment at import)
)

RAY_TOKEN = USER_HOME / ".ray" / "auth_token"
RAY_TOKEN.parent.mkdir(mode=0o700)
RAY_TOKEN.touch(mode=0o600)
RAY_TOKEN.write_text(generate_new_authentication_token())
# Taken before any Ray call: connecting sets RAY_AUTH_MODE in this process's environment (Ray's
# own way to hand the mode to children), which a user's shell does not have.
_USER_ENV = dict(os.environ)


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell in the session's home (no RAY_AUTH_* variables), for
    every CLI call a test runs as a user would."""
    return {**_USER_ENV, **extra}


from cluster._private.connection import HEAD_ENV  # noqa: E402  (after the environment is set)

RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
_ns = itertools.count()


def pytest_unconfigure(config):
    shutil.rmtree(USER_HOME, ignore_errors=True)  # the machine as the session found it


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

    from cluster import connect

    port, dashboard, metrics = free_port(), free_port(), free_port()
    # Workers import test agents from tests/, and jobs find this Python first on PATH.
    env = {
        **user_env(),
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
    connect(address, "tests")  # as every swarmray driver connects: with the token Ray set up
    session, gcs_address = ray.get_runtime_context().get_session_name(), ray.get_runtime_context().gcs_address
    yield {
        "address": address,
        "dashboard": f"http://127.0.0.1:{dashboard}",
        "metrics": f"http://127.0.0.1:{metrics}/metrics",
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
