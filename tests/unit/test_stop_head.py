"""`swarm down` stops the processes of its own head's session and nothing else (issue 26, item
21): arguments matched exactly, not as substrings, and another user's process skipped and
reported instead of stopping `down` half-way. Real command lines, real processes (no Ray)."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from cluster._private.connection import names_session, stop_head
from tests.waiting import wait_until

SESSION = "session_2026-12-06_22-27-40_292653_19101"
ADDRESS = "192.0.2.2:6379"
# As `ps` shows a head's processes (ray 2.60): the GCS, the client server, the dashboard.
GCS = [
    "/venv/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server",
    f"--log_dir=/tmp/ray/{SESSION}/logs",
    "--gcs_server_port=6379",
    f"--session-name={SESSION}",
    f"--session-dir=/tmp/ray/{SESSION}",
]
CLIENT_SERVER = ["/venv/bin/python3", "-m", "ray.util.client.server", f"--address={ADDRESS}", "--port=10001"]
DASHBOARD = ["/venv/bin/python3", "dashboard.py", "--temp-dir=/tmp/ray", f"--log-dir=/tmp/ray/{SESSION}/logs"]


def test_the_sessions_own_processes_are_matched():
    for args in (GCS, CLIENT_SERVER, DASHBOARD):
        assert names_session(args, SESSION, ADDRESS), args


def test_another_heads_processes_are_not_matched_by_a_prefix():
    other = SESSION + "7"  # a later session whose name starts with ours
    assert not names_session([a.replace(SESSION, other) for a in GCS], SESSION, ADDRESS)
    assert not names_session([a.replace(SESSION, other) for a in DASHBOARD], SESSION, ADDRESS)
    for address in ("192.0.2.2:63790", "10.192.0.2.2:6379"):  # another head's client server
        assert not names_session([a.replace(ADDRESS, address) for a in CLIENT_SERVER], SESSION, ADDRESS)
    assert not names_session(CLIENT_SERVER, SESSION, None)
    assert not names_session(["/bin/less", f"/home/u/notes-{SESSION}.txt"], SESSION, ADDRESS)


# A Python any user may run (the venv's may sit where only its owner reaches).
PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable


def _sleeper(arg: str, *more: str, **kw):
    """A process with `arg` and `more` last on its command line, returned once the command line
    shows them: Popen returns before exec has set it up (empty for a few ms, longer when the
    page cache is cold, as late in a long test run), and `stop_head` matches what it shows."""
    import psutil

    shown = [arg, *more]
    proc = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(300)", *shown], **kw)
    try:
        wait_until(
            lambda: psutil.Process(proc.pid).cmdline()[-len(shown) :] == shown, 30, f"pid {proc.pid}'s args"
        )
    except AssertionError:
        proc.kill()
        proc.wait(timeout=30)
        raise
    return proc


@pytest.fixture
def sleepers():
    started = []
    yield lambda *args, **kw: started.append(_sleeper(*args, **kw)) or started[-1]
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_down_stops_its_session_and_leaves_another_heads_address_alone(sleepers):
    session = f"session_unit_{os.getpid()}"
    mine = sleepers(f"--session-dir=/tmp/ray-unit/{session}")
    client = sleepers("--address=127.0.0.1:16379")
    theirs = sleepers("--address=127.0.0.1:163790")  # another head, a port that starts like ours
    stopped = stop_head(session, "127.0.0.1:16379", timeout_s=15)
    assert mine.wait(timeout=15) is not None and client.wait(timeout=15) is not None
    assert theirs.poll() is None  # still running
    assert (stopped.stopped, stopped.skipped) == (2, [])


@pytest.mark.skipif(os.geteuid() != 0, reason="starting another user's process needs root")
def test_another_users_process_is_skipped_and_reported_and_the_rest_stopped(sleepers):
    session = f"session_unit_{os.getpid()}"
    theirs = sleepers(f"--session-dir=/tmp/ray-unit/{session}", user="nobody")
    mine = sleepers(f"--session-dir=/tmp/ray-unit/{session}")
    stopped = stop_head(session, None, timeout_s=15)
    assert mine.wait(timeout=15) is not None
    assert theirs.poll() is None
    assert stopped.stopped == 1
    assert stopped.skipped == [f"pid {theirs.pid} (user nobody): another user's process"]


def _sleeper_with_pid(pid: int, attempts: int = 20) -> subprocess.Popen:
    """A sleeper given `pid`, by setting the kernel's last-assigned PID just before it starts;
    retried, since any other process started in between takes the PID first."""
    for _ in range(attempts):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        proc = _sleeper(f"--session-dir=/tmp/ray-unit/session_reused_{os.getpid()}")
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait(timeout=30)
    pytest.skip(f"could not start a process with PID {pid} in {attempts} attempts")


@pytest.mark.skipif(
    not os.access("/proc/sys/kernel/ns_last_pid", os.W_OK), reason="choosing a PID needs root"
)
def test_a_head_process_that_reuses_a_pid_seen_before_is_still_stopped(sleepers):
    """psutil's `process_iter` caches a Process per PID: one cached for a process now gone, and
    then yielded for a new process with the same PID, refuses to signal it ('PID has been
    reused'). A long test session wraps PIDs (32768 here), so `down` once left a process running."""
    import psutil

    gone = _sleeper("--not-a-head")
    list(psutil.process_iter(["cmdline"]))  # caches a Process for `gone`
    gone.kill()
    gone.wait(timeout=30)
    # psutil tells processes apart by start time in clock ticks (10 ms): a process started in
    # the same tick would pass for the one gone.
    started_s = time.monotonic()
    while time.monotonic() < started_s + 0.05:
        time.sleep(0.01)
    mine = _sleeper_with_pid(gone.pid)
    try:
        stopped = stop_head(f"session_reused_{os.getpid()}", None, timeout_s=15)
        assert mine.wait(timeout=15) is not None
        assert (stopped.stopped, stopped.skipped) == (1, [])
    finally:
        if mine.poll() is None:
            mine.kill()
            mine.wait(timeout=30)
