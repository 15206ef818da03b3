"""Pools and Ray's autoscaler: a pool no node alive fits waits for a node type that could hold
it, and only one that none could is infeasible."""

from __future__ import annotations

import subprocess
import sys

import pytest
import ray

from cluster import SchedulingError, load_config
from tests.conftest import ROOT, running_system
from tests.waiting import wait_until


@pytest.fixture
def launcher_monitor(head):
    """A process on this machine that shows, in the process list, as the session head's
    autoscaler would after `ray up ray-cluster.yaml`: Ray's monitor.py with this cluster's
    `--gcs-address` and the launcher file as `--autoscaling-config`. (It adds no nodes: the
    session head has no node provider.)"""
    gcs = ray.get_runtime_context().gcs_address
    monitor = "/".join(["ray", "autoscaler", "_private", "monitor.py"])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; sys.stdin.read()",
            monitor,
            f"--gcs-address={gcs}",
            f"--autoscaling-config={ROOT / 'ray-cluster.yaml'}",
        ],
        stdin=subprocess.PIPE,
    )
    yield proc
    proc.stdin.close()  # it ends at the end of its input
    proc.wait(timeout=10)


def _pool(agent: str, accelerator: str) -> dict:
    return {
        "agent": {"class": f"actors:{agent}"},
        "ready_timeout_s": 1,
        "resources": {"num_gpus": 1, "accelerator_type": accelerator},
    }


def test_a_pool_a_launcher_node_type_could_hold_waits_for_it_and_one_none_could_is_infeasible(
    head, namespace, launcher_monitor
):
    config = load_config(
        {
            "namespace": namespace,
            "swarms": {
                "edge": {"pools": {"a10g": _pool("TextStatsAgent", "A10G")}},  # gpu_worker offers it
                "far": {"pools": {"h100": _pool("ChecksumAgent", "H100")}},  # no node type does
            },
        }
    )
    with running_system(config) as client:

        def reasons():
            rows = {a["pool"]: a["reason"] for s in client.status()["swarms"] for a in s["agents"]}
            return rows if "starting" not in rows.values() else None

        rows = wait_until(reasons, 30, "both pools past their ready timeout")
        assert rows["a10g"].startswith("waiting for the autoscaler to add a 'gpu_worker' node for {"), rows
        assert "'accelerator_type:A10G': 0.001" in rows["a10g"]
        assert rows["h100"].startswith("infeasible: no node offers"), rows
        # The waiting pool's tasks are accepted and queued; the infeasible one's refused at once.
        task_id = client.submit("text.stats", {"text": "for the A10G node"})
        assert client.cancel(task_id)
        with pytest.raises(
            SchedulingError, match=r"no agent can run 'data\.checksum': pool 'h100': infeasible"
        ):
            client.submit("data.checksum", {"text": "x"})
