"""GPU placement with logical GPUs: the session head has 2, fractions pack onto them."""

import time

from cluster import load_config
from tests.cluster.test_cli import swarm
from tests.conftest import running_system


def edge_system(namespace, **pool):
    """One swarm, `edge`, with one pool of text agents asking for GPU resources."""
    pool = {"agent": {"class": "actors:TextStatsAgent"}, **pool}
    return load_config({"namespace": namespace, "swarms": {"edge": {"pools": {"infer": pool}}}})


def test_half_gpu_agents_fill_two_gpus_and_the_fifth_waits_with_a_reason(head, namespace):
    config = edge_system(
        namespace, min_agents=5, max_agents=5, ready_timeout_s=2, resources={"num_gpus": 0.5}
    )
    started = time.monotonic()
    with running_system(config) as client:
        assert time.monotonic() - started < 60  # up returned instead of waiting for the fifth
        (swarm,) = client.status()["swarms"]
        states = sorted(a["state"] for a in swarm["agents"])
        assert states == ["alive"] * 4 + ["pending"]
        (pending,) = [a for a in swarm["agents"] if a["state"] == "pending"]
        assert "waiting for resources" in pending["reason"]
        assert "'GPU': 0.5" in pending["reason"] and "'GPU': 0.0" in pending["reason"]
        assert client.run("text.stats", {"text": "on a GPU slot"}, swarm="edge").ok


def test_accelerator_no_node_has_is_reported_infeasible_and_its_tasks_refused(head, namespace):
    config = edge_system(namespace, ready_timeout_s=1, resources={"num_gpus": 1, "accelerator_type": "H100"})
    with running_system(config) as client:
        (agent,) = client.status()["swarms"][0]["agents"]
        assert agent["state"] == "pending"
        assert agent["reason"].startswith("infeasible: no node offers")
        assert "accelerator_type:H100" in agent["reason"]
        # A task no agent can ever run is refused at once, with the pool's reason.
        ns = ["--namespace", namespace, "--address", head["address"]]
        proc = swarm("submit", "text.stats", "--input", '{"text": "x"}', "--wait", *ns, check=False)
        assert proc.returncode == 2, proc.stdout
        assert proc.stderr.startswith("error: no agent can run 'text.stats': pool 'infer': infeasible")
