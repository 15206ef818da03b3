"""Pools and Ray's autoscaler: a pool no node alive fits waits for a node type that could hold
it, and only one that none could is infeasible."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import ray

from benchmarks._autoscaling import FAKE_HEAD_NODE_ID
from cluster import SchedulingError, load_config
from tests.conftest import ROOT, running_system, user_env
from tests.waiting import wait_until


@pytest.fixture
def launcher_monitor(head):
    """A process on this machine that shows, in the process list, as the session head's
    autoscaler would after `ray up ray-cluster.yaml`: Ray's monitor.py with this cluster's
    `--gcs-address` and the launcher file as `--autoscaling-config`. (It adds no nodes: the
    session head has no node provider; the slow tests below run the real autoscaler.)"""
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


# -- Ray's real autoscaler over fake nodes of ray-cluster.yaml's types -------------------------


@pytest.fixture(scope="module")
def autoscaled():
    """The reports of one run of `python -m benchmarks.autoscale`: its own head and fake nodes,
    beside the session head, under Ray's v1 autoscaler, with the fitted cluster recipe up."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.autoscale"],
        capture_output=True,
        text=True,
        timeout=1200,
        env=user_env(),
        cwd=ROOT,
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    print(proc.stdout)  # the figures, for `pytest -rP`
    reports = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith('{"scenario"')]
    return {r["scenario"]: r for r in reports}


@pytest.mark.slow
@pytest.mark.autoscaling
def test_a_gpu_pool_brings_up_a_gpu_node_and_its_agents_start_there(autoscaled):
    report = autoscaled["gpu"]
    # Before the node came, the pool waited for it, and never read as infeasible.
    assert report["gpu_reasons"], report
    assert any(
        r.startswith("waiting for the autoscaler to add a 'gpu_worker' node") for r in report["gpu_reasons"]
    )
    assert not any(r.startswith("infeasible") for r in report["gpu_reasons"]), report["gpu_reasons"]
    assert report["active_nodes"].get("gpu_worker", 0) >= 1
    (gpu_host,) = [h for h in report["hosts"] if h["pool"] == "gpu"]
    assert gpu_host["node_type"] == "gpu_worker" and gpu_host["gpu_ids"] == [0]
    assert gpu_host["node_id"].startswith("fff") and gpu_host["node_id"] != FAKE_HEAD_NODE_ID
    cpu_hosts = [h for h in report["hosts"] if h["pool"] != "gpu"]
    assert {h["pool"] for h in cpu_hosts} == {"stats", "memory", "validate"}
    for host in cpu_hosts:  # a CPU pool never lands on a GPU node
        assert host["node_offers"] == ["cpu_agents"], host


@pytest.mark.slow
@pytest.mark.autoscaling
def test_a_backlog_scales_the_pool_and_the_autoscaler_adds_workers_then_idle_gives_them_back(autoscaled):
    report = autoscaled["scale"]
    assert report["succeeded"] == report["tasks"] == 200
    assert report["cpu_workers_before"] == 0 and report["cpu_workers_peak"] >= 1, report
    assert report["agents_peak"] > report["agents_before"], report
    # The grown CPU pool ran on the head and the cpu_workers, never on the gpu_worker's CPUs.
    assert report["stats_ran_on"] == ["cpu_worker", "head"], report
    assert report["scale_up_s"] > 0 and report["p99_ms"] >= report["p50_ms"] > 0
    # Idle, every cpu_worker was given back (the run fails otherwise, with where the hosts sat),
    # and the pool kept its min_agents on the head, which the autoscaler never removes.
    last = report["give_back_trace"][-1]
    assert last["cpu_agents_held"] == {} and "cpu_worker" not in last["active_nodes"], last
    assert sorted(h for h in last["hosts"] if h.startswith("stats@")) == ["stats@head"] * 2, last


@pytest.mark.slow
@pytest.mark.autoscaling
def test_a_worker_taken_by_the_autoscaler_mid_run_loses_no_accepted_task(autoscaled):
    report = autoscaled["preempt"]
    assert report["workers_before"] and len(report["removed"]) == report["node_kills"] == 1, report
    assert report["submitted"] == report["completed"] == 200 and report["lost"] == 0
    assert report["duplicate_results"] == 0
    assert report["retried"] > 0, report  # the worker went with tasks running on it
    # State-holding actors stay on the head, as the recipe's control_resources promise.
    assert report["named_off_head"] == {}, report["named_off_head"]
    assert {"registry", "queen:ai", "queen:storage", "memory:global"} <= set(report["named_actors"])
    assert report["memory_records"] == report["memory_written"]


@pytest.mark.slow
@pytest.mark.autoscaling
def test_an_unoffered_accelerator_is_infeasible_at_once_and_an_offered_one_waits(autoscaled):
    report = autoscaled["gpu"]
    assert report["h100_reason"].startswith("infeasible: no node offers"), report
    assert report["h100_infeasible_s"] < 10
    assert "no agent can run 'bench.check': pool 'h100': infeasible" in report["h100_refused"]
    assert not any(r.startswith("infeasible") for r in report["gpu_reasons"])
