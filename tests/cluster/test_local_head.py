"""`swarm up` with no address and no Ray running: it starts a head that outlives it."""

import subprocess

import pytest

from tests.cluster.test_cli import swarm
from tests.conftest import RAY

pytestmark = pytest.mark.before_head


def test_up_starts_a_local_head_that_outlives_it_and_down_stops_it(tmp_path):
    if subprocess.run([RAY, "status"], capture_output=True).returncode == 0:
        pytest.skip("a Ray instance is already running on this machine")
    try:
        up = swarm("up")
        assert "is up" in up.stdout
        # `up` has exited; the system still answers from a new process.
        done = swarm("submit", "text.stats", "--input", '{"text": "still up"}', "--wait")
        assert '"words": 2' in done.stdout
    finally:
        removed = swarm("down", check=False).stdout
    assert "removed local Ray head" in removed
    assert subprocess.run([RAY, "status"], capture_output=True).returncode != 0
