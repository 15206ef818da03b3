"""`swarm up` with no address and no Ray running: it starts a head that outlives it."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from ray._common.utils import get_ray_address_file
from ray._private.services import find_gcs_addresses

from tests.cluster.test_cli import swarm
from tests.conftest import RAY, free_port

pytestmark = pytest.mark.before_head

PRIVATE_RAY = """
import ray
from cluster._private.connection import connect
connect(None, "stale-address")
print(ray.get_runtime_context().gcs_address)
"""


def test_up_starts_a_local_head_that_outlives_it_and_down_stops_it(tmp_path):
    # A GCS process tells at once (`ray status` waits ~40 s on an address left behind).
    if find_gcs_addresses():
        pytest.skip("a Ray instance is already running on this machine")
    # A home of its own, so the default journals (~/.swarmray) are this test's, not the user's;
    # built models still come from the user's cache.
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": cache}
    token = os.path.expanduser("~/.ray/auth_token")  # Ray's token, where Ray looks for it by default
    if "RAY_AUTH_TOKEN" not in env and os.path.exists(token):
        env["RAY_AUTH_TOKEN_PATH"] = token
    journals = tmp_path / ".swarmray" / "journal" / "swarmray"
    # A Ray that died without `ray stop` leaves its address behind, where nothing answers now;
    # Ray's own "auto" would wait on it for minutes.
    stale, current = free_port(), Path(get_ray_address_file(None))
    current.parent.mkdir(parents=True, exist_ok=True)
    current.write_text(f"{socket.gethostbyname(socket.gethostname())}:{stale}")
    try:
        status = swarm("status", check=False, env=env, timeout_s=60)
        assert status.returncode != 0 and f":{stale}: nothing answers there" in status.stderr
        # With no address at all (the demo, a Client()), a private Ray starts instead.
        private = subprocess.run(
            [sys.executable, "-c", PRIVATE_RAY], capture_output=True, text=True, timeout=60, env=env
        )
        assert private.returncode == 0 and not private.stdout.strip().endswith(f":{stale}"), private.stderr
        up = swarm("up", env=env)
        assert "is up" in up.stdout
        assert up.stderr == ""  # `ray start`'s output and Ray's notices stay in Ray's logs
        # `up` has exited; the system still answers from a new process.
        done = swarm("submit", "text.stats", "--input", '{"text": "still up"}', "--wait", env=env)
        assert '"words": 2' in done.stdout
        assert list((journals / "ai").glob("gen-*.log"))  # the default journal, in this home
    finally:
        removed = swarm("down", check=False, env=env).stdout
        if current.exists() and current.read_text().endswith(f":{stale}"):
            current.unlink()  # not left for the next Ray user on this machine
    assert "removed local Ray head" in removed
    assert not list(journals.glob("*/gen-*.log"))  # down purged the journals
    assert subprocess.run([RAY, "status"], capture_output=True).returncode != 0
    # All of that head went, the agents that retitle themselves too (a dashboard agent left
    # behind holds its port, and the next head's job agent cannot start).
    left = [p.info["name"] for p in psutil.process_iter(["name"]) if p.info["name"].startswith("ray::")]
    assert left == []
