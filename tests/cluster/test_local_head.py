"""`swarm up` with no address and no Ray running: it starts a head that outlives it."""

import os
import subprocess

import psutil
import pytest

from tests.cluster.test_cli import swarm
from tests.conftest import RAY

pytestmark = pytest.mark.before_head


def test_up_starts_a_local_head_that_outlives_it_and_down_stops_it(tmp_path):
    if subprocess.run([RAY, "status"], capture_output=True).returncode == 0:
        pytest.skip("a Ray instance is already running on this machine")
    # A home of its own, so the default journals (~/.swarmray) are this test's, not the user's;
    # built models still come from the user's cache.
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": cache}
    token = os.path.expanduser("~/.ray/auth_token")  # Ray's token, where Ray looks for it by default
    if "RAY_AUTH_TOKEN" not in env and os.path.exists(token):
        env["RAY_AUTH_TOKEN_PATH"] = token
    journals = tmp_path / ".swarmray" / "journal" / "swarmray"
    try:
        up = swarm("up", env=env)
        assert "is up" in up.stdout
        assert up.stderr == ""  # `ray start`'s output and Ray's notices stay in Ray's logs
        # `up` has exited; the system still answers from a new process.
        done = swarm("submit", "text.stats", "--input", '{"text": "still up"}', "--wait", env=env)
        assert '"words": 2' in done.stdout
        assert list((journals / "ai").glob("gen-*.log"))  # the default journal, in this home
    finally:
        removed = swarm("down", check=False, env=env).stdout
    assert "removed local Ray head" in removed
    assert not list(journals.glob("*/gen-*.log"))  # down purged the journals
    assert subprocess.run([RAY, "status"], capture_output=True).returncode != 0
    # All of that head went, the agents that retitle themselves too (a dashboard agent left
    # behind holds its port, and the next head's job agent cannot start).
    left = [p.info["name"] for p in psutil.process_iter(["name"]) if p.info["name"].startswith("ray::")]
    assert left == []
