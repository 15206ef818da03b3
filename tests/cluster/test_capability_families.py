"""A pool offering a family of capabilities (`echo.*`) on a real system: its tasks run under the
family wherever they are submitted, and `swarm capabilities` lists what its agent class says the
family holds now."""

import subprocess
import sys

from cluster import load_config
from tests.conftest import running_system, user_env


def test_a_family_runs_every_capability_under_it_and_lists_its_entries(head, namespace):
    config = load_config(
        {
            "namespace": namespace,
            "swarms": {
                "echo": {
                    "pools": {
                        "echo": {
                            "agent": {
                                "class": "tests.agents:EchoFamilyAgent",
                                "params": {"listed": ["a", "b"]},
                            },
                            "resources": {"num_cpus": 0},
                        }
                    }
                },
                "front": {"pools": {"text": {"agent": {"class": "actors:TextStatsAgent"}, "colocate": True}}},
            },
        }
    )
    with running_system(config) as client:
        direct = [client.submit(cap, {"n": i}) for i, cap in enumerate(("echo.a", "echo.b"))]
        # Submitted to a swarm that lacks it: the registry routes the family's member to `echo`.
        handed = client.submit("echo.not_listed", {"n": 2}, swarm="front")
        results = [client.result(t, timeout_s=60) for t in [*direct, handed]]
        listed = subprocess.run(
            [
                sys.executable,
                "-m",
                "cluster",
                "capabilities",
                "--namespace",
                namespace,
                "--address",
                head["address"],
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=user_env(),
        )
    assert [(r.status.value, r.swarm) for r in results] == [("succeeded", "echo")] * 3
    assert [r.output for r in results] == [
        {"capability": "echo.a", "payload": {"n": 0}},
        {"capability": "echo.b", "payload": {"n": 1}},
        {"capability": "echo.not_listed", "payload": {"n": 2}},
    ]
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split(maxsplit=3)[1:] for line in listed.stdout.splitlines()[1:]}
    listed_in = f"(listed in {namespace})"
    assert rows["echo.a"] == ["echo", "echo", f"echoes as a {listed_in}"]
    assert rows["echo.b"] == ["echo", "echo", f"echoes as b {listed_in}"]
    assert "echo.*" not in rows and "other.thing" not in rows  # the family, and what lies outside it
    assert rows["text.stats"][0] == "front"
