"""The README's first hour, in order, as a new user runs it from a plain shell (no RAY_*
variables) in a fresh home: quick start command 1's demo, then every command of "Running a
system". `swarm up` starts a head that outlives it, `swarm down` stops it, and nothing of Ray is
left running; an `up` that fails stops the head it started."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from ray._private.services import find_gcs_addresses

from tests.cluster.conftest import VENV_BIN, no_ray_left
from tests.conftest import ROOT, free_port
from tests.readme import blocks, commands

pytestmark = pytest.mark.before_head

PRIVATE_RAY = """
import ray
from cluster._private.connection import connect
connect(None, "stale-address")
print(ray.get_runtime_context().gcs_address)
"""


def user_shell(home: Path) -> dict[str, str]:
    """A new user's shell after `source .venv/bin/activate`: nothing else of this session.
    Built models come from the developer's cache (not what is tested; it saves a minute)."""
    home.mkdir(exist_ok=True)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return {
        "HOME": str(home),
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "XDG_CACHE_HOME": cache,
    }


def run(line: str, env: dict[str, str], timeout_s: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s
    )


@pytest.mark.slow
def test_the_readme_runs_as_written_from_the_demo_to_swarm_down_in_a_fresh_home(machine, tmp_path):
    env = user_shell(tmp_path / "home")
    home = Path(env["HOME"])

    # Quick start command 1, past its installs (this checkout is installed): the demo.
    (quick_start,) = blocks("Quick start", "bash")
    demo = commands(quick_start)[0].split(" && ")[-1]
    assert demo == ".venv/bin/swarm demo"
    proc = run(demo, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "21/21 tasks succeeded" in proc.stdout
    # Its `ray.init()` left Ray's token in this home: from now on every head `ray start` runs
    # here wants it (Ray >= 2.59), and swarmray's driver must send it.
    assert (home / ".ray" / "auth_token").exists()
    # The demo ran a system of its own and took it all away: no data, no key, no Ray.
    assert not (home / ".swarmray" / "journal" / "swarmray-demo").exists()
    assert not (home / ".swarmray" / "credentials" / "swarmray-demo.key").exists()
    no_ray_left()

    # A Ray that died without `ray stop` leaves its address behind, where nothing answers now;
    # Ray's own "auto" would wait on it for minutes.
    stale = free_port()
    machine.parent.mkdir(parents=True, exist_ok=True)
    machine.write_text(f"{socket.gethostbyname(socket.gethostname())}:{stale}")
    status = run("swarm status", env, timeout_s=60)
    assert status.returncode == 2 and f":{stale}: nothing answers there" in status.stderr
    # With no address at all (a Client() in a script), a private Ray starts instead.
    private = subprocess.run(
        [sys.executable, "-c", PRIVATE_RAY], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert private.returncode == 0, private.stderr
    assert not private.stdout.strip().endswith(f":{stale}")

    # "Running a system", line by line; the task id the README abbreviates is the one printed.
    block = blocks("Running a system", "bash")[0]  # the section's own, before its subsections'
    task_id = None
    outputs = {}
    try:
        for line in commands(block):
            if task_id is not None:
                line = re.sub(r"storage:1f0c\.\.\.", task_id, line)
            if line == "swarm down":  # before it, the other sections' examples, on this system
                run_the_examples_of_the_running_system(env, tmp_path / "work")
            proc = run(line, env)
            outputs[line] = proc
            expected = 1 if line.startswith("swarm cancel") else 0  # it ended before: nothing to cancel
            assert proc.returncode == expected, f"{line}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            if line.startswith("swarm submit data.checksum"):
                task_id = proc.stdout.strip()
            if line.startswith("swarm up"):
                assert "is up" in proc.stdout
                assert proc.stderr == ""  # `ray start`'s banner and Ray's notices stay in its logs
                # The demo's documents stayed with the demo: the user's `demo` namespace is empty.
                assert re.search(r"^demo\s+0\s+0\s+0\s", proc.stdout, re.M), proc.stdout
    finally:  # a failed step must not leave the head to the tests that follow
        if "swarm down" not in outputs:
            run("swarm down", env)
    assert task_id and task_id.startswith("storage:")
    the_cli_shows_what_the_running_system_did(outputs, task_id)
    down = outputs["swarm down"]
    assert "removed local Ray head" in down.stdout
    assert "already succeeded" in outputs[f"swarm cancel {task_id}"].stdout
    assert list((home / ".swarmray" / "journal" / "swarmray").glob("*/gen-*.log")) == []  # purged


def task_shown(proc: subprocess.CompletedProcess) -> tuple[str, object]:
    """What `swarm result` and `submit --wait` print: the line of how a task ended, and its
    output, JSON wrapped over indented lines."""
    head, *output = proc.stdout.splitlines()
    return head, json.loads(" ".join(line.strip() for line in output))


def the_cli_shows_what_the_running_system_did(outputs: dict, task_id: str) -> None:
    """What the lines of "Running a system" printed, checked here rather than by running the
    same commands again on a system of tests/cluster/test_cli.py's own."""

    def printed(start: str) -> subprocess.CompletedProcess:
        (proc,) = [proc for line, proc in outputs.items() if line.startswith(start)]
        return proc

    up = outputs["swarm up"].stdout
    assert "ai.stats.0" in up
    table = outputs["swarm status"].stdout
    assert "STRATEGY" in table and "one_for_one" in table and "0/10 in 60s" in table  # supervision shown
    assert "Facts service: http://" in table
    head, output = task_shown(printed("swarm submit text.stats"))  # "Ray runs actors."
    assert head.startswith("text.stats: succeeded in ") and " on ai.stats." in head
    assert output["words"] == 3
    head, output = task_shown(printed("swarm submit math.stats"))  # [1, 2, 3], sent to ai
    assert head.startswith("math.stats: succeeded in ") and "(sent to ai, delegated to business; ai:" in head
    assert output["mean"] == 2.0
    listed = outputs["swarm capabilities"].stdout.splitlines()
    offered_by = {line.split()[0]: line.split()[1] for line in listed[1:]}
    assert offered_by["memory.search"] == "storage" and offered_by["math.stats"] == "business"
    head, output = task_shown(outputs[f"swarm result {task_id}"])  # without --json: for people
    assert head.startswith("data.checksum: succeeded in ") and f"(sent to storage; {task_id})" in head
    assert output["crc32"] == 891568578


# Lines of those sections not run here, and why.
NOT_RUN = {
    "swarm status --watch": "a live view until Ctrl-C (tests/serve/test_operations.py draws its frames)",
    "serve deploy configs/serve.yaml": "tests/serve/test_serve_config_file.py deploys that file",
    "kubectl apply -f deploy/kuberay/rayservice.yaml": "no Kubernetes here (tests/unit/test_deploy_files.py)",
}


def run_the_examples_of_the_running_system(env: dict[str, str], work: Path) -> None:
    """The README's examples against a running system, as written: "From Python", "Memory",
    "AI service", "Facts service" and "Operations". A Python block is run whole, then one
    line the test adds prints what it made; shell lines that name files find them in `work`."""
    work.mkdir()
    (work / "notes").mkdir()
    (work / "notes" / "curie.txt").write_text("Marie Curie was born in Warsaw.")
    (work / "notes" / "warsaw.txt").write_text("Warsaw lies on the Vistula river.")
    paper = {"id": "ray", "title": "Ray", "text": "Ray was created at UC Berkeley's RISELab."}
    (work / "papers.jsonl").write_text(json.dumps(paper) + "\n")
    (work / "notes.jsonl").write_text(json.dumps({"text": "Detached actors outlive their driver."}) + "\n")

    def python(block: str, check: str) -> str:
        proc = subprocess.run(
            [str(VENV_BIN / "python"), "-c", block + check],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, block + proc.stderr[-3000:]
        return proc.stdout

    (from_python,) = blocks("From Python", "python")
    said = python(from_python, "\nprint(result.status.value, result.output['total'])")
    assert said.split() == ["succeeded", "19.00"]  # 2 x 9.50, no tax
    ai = blocks("AI service", "python")[0]
    said = python(ai, "\nprint(reply.choices[0].message.content, len(vectors.data[0].embedding))")
    assert "Paris" in said and said.split()[-1] == "384"

    shell = [*commands(blocks("Memory", "bash")[0]), *commands(blocks("Facts service", "bash")[0])]
    shell += [line for line in commands(blocks("Operations", "bash")[0]) if line not in NOT_RUN]
    ran = []
    for line in shell:
        proc = subprocess.run(
            ["bash", "-c", line], cwd=work, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, f"{line}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        ran.append((line, proc.stdout))

    def said_by(start: str) -> str:
        (out,) = [out for line, out in ran if line.startswith(start)]
        return out

    assert "Ray restarts detached actors." in said_by("swarm submit memory.search")
    assert said_by("swarm submit memory.delete").splitlines()[1].strip() == '{"deleted": 1}'  # one `id`
    found = said_by("swarm facts search")
    assert "Marie Curie born in Warsaw" in found and "DOCUMENT" in found
    assert "Marie Curie was born in Warsaw." in json.dumps(json.loads(said_by("curl")))
    assert "1 records stored in memory:storage" in said_by("swarm memory load")
    by_key = json.loads(said_by("swarm usage --by key"))
    assert by_key[-1]["key"] == "total" and by_key[-1]["requests"] >= 1  # the AI example's requests


def test_an_up_that_fails_after_starting_a_head_stops_that_head(machine, tmp_path):
    env = user_shell(tmp_path / "home")
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "namespace: broken\n"
        "registry: {journal_uri: /dev/null/journal}  # valid YAML, a path that cannot be made\n"
        "swarms:\n"
        "  one:\n"
        "    pools:\n"
        "      stats:\n"
        "        agent:\n"
        "          class: actors:TextStatsAgent\n"
        "          capabilities: [{name: text.stats, description: Counts words.}]\n"
    )
    proc = run(f"swarm up --config {broken}", env, timeout_s=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "stopped the local Ray head this `up` had started",
        "error: an actor failed to start: NotADirectoryError: [Errno 20] Not a directory: "
        "'/dev/null/journal' (SWARMRAY_LOG_LEVEL=DEBUG shows more)",
    ]
    assert not find_gcs_addresses()  # nothing left holding Ray's ports: the next `up` can start
