"""The README's sections "Under `ray job submit`" and "Your own agents", run line by line as
written, each in a home directory of its own, as a new user would run them."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cluster._private.connection import stop_head
from tests.conftest import RAY_TOKEN, ROOT
from tests.readme import blocks, commands


def _fresh_home(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A user's environment with nothing of this session in it."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", **extra}
    return env


def _run(line: str, cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
@pytest.mark.before_head
def test_the_ray_job_submit_section_runs_as_written(machine, tmp_path):
    (block,) = blocks("Under `ray job submit`", "bash")
    env = _fresh_home(tmp_path)  # no RAY_* variables, no ~/.ray/auth_token
    script = "set -e\n" + block  # `source` and `export` carry from line to line, as in a shell
    try:
        proc = _run(script, ROOT, env)
    finally:
        session = Path(os.readlink("/tmp/ray/session_latest")).name
        current = Path("/tmp/ray/ray_current_cluster")
        stop_head(session, current.read_text().strip() if current.exists() else None)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "21/21 tasks succeeded" in proc.stdout
    assert "facts.answer: succeeded" in proc.stdout
    answer = proc.stdout.split("facts.answer: succeeded", 1)[1].split('"grounding"', 1)[0]
    assert "Vistula" in answer  # two hops: the answer, not just a passage, names the river
    assert "llm.generate: succeeded" in proc.stdout and "on ai.llm.0" in proc.stdout  # the AI service
    assert "(sent to business, delegated to ai;" in proc.stdout  # sent to a swarm that lacks it
    assert "(raylet)" not in proc.stdout and "Deleting app" not in proc.stdout  # Ray's logs stay in its files


def test_the_own_agents_section_runs_as_written(head, tmp_path):
    python, yaml_file = blocks("Your own agents", "python")[0], blocks("Your own agents", "yaml")[0]
    (shell,) = blocks("Your own agents", "bash")
    work = tmp_path / "work"
    for block in (python, yaml_file):
        path = work / block.splitlines()[0].removeprefix("# ")  # each block names its file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block)
    venv_bin = str(Path(sys.executable).parent)
    env = _fresh_home(tmp_path, SWARMRAY_ADDRESS=head["address"])
    env["PATH"] = f"{venv_bin}:{env['PATH']}"  # `swarm` is the console script, as after `activate`
    # A user of the session head has its token where Ray keeps it, and no RAY_* variable.
    token = Path(env["HOME"]) / ".ray" / "auth_token"
    token.parent.mkdir()
    shutil.copy(RAY_TOKEN, token)
    up, capabilities, submit, down = commands(shell)
    assert shlex.split(up)[:2] == ["swarm", "up"]
    try:
        proc = _run(up, work, env)
        assert proc.returncode == 0, proc.stderr
        assert "loud.shout.0" in proc.stdout and "system 'mine' is up" in proc.stdout
        assert proc.stderr == ""  # Ray's own notices stay in Ray's logs

        proc = _run(capabilities, work, env)
        assert proc.returncode == 0, proc.stderr
        assert "text.shout  (swarm loud, pools shout)" in proc.stdout
        assert "text.shout  (swarm loud, pools shout)\n  The text in capitals.\n" in proc.stdout
        assert "text  string  required  What to shout." in " ".join(proc.stdout.split("\n")).replace(
            "  ", "  "
        )

        proc = _run(submit, work, env)  # no -n: the namespace of the last `up`
        assert proc.returncode == 0, proc.stderr
        head, output = proc.stdout.splitlines()  # how it ended and where, then its output
        assert head.startswith("text.shout: succeeded in ") and " on loud.shout." in head
        assert output == '    "HELLO!!"'

        refused = _run("swarm submit text.shout --input '{\"txt\": 1}' --wait", work, env)
        assert refused.returncode == 2
        assert refused.stderr.strip() == "error: invalid payload for 'text.shout': text: required"
        garbage = _run("swarm result garbage", work, env)
        assert garbage.returncode == 2
        assert garbage.stderr.startswith("error: 'garbage' is not a task id of this system")
    finally:
        proc = _run(down, work, env)
    assert proc.returncode == 0, proc.stderr
    assert "removed queen:loud" in proc.stdout
