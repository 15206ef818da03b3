"""Autoscaling on one machine: the cluster recipe under Ray's real autoscaler, over fake nodes of
`ray-cluster.yaml`'s types (benchmarks/_autoscaling.py).

It starts a head alone (its own ports and temp directory, so it runs beside another Ray),
`swarm up`s the fitted recipe, and runs, printing one JSON line each:
  probe    (alone) one actor asking `cpu_agents` past the head's brings up one cpu_worker;
  gpu      the `ai.gpu` pool waits for the autoscaler, which adds a gpu_worker for it, where its
           agent starts; CPU agents' nodes offer `cpu_agents` and no GPU; `edge.h100` is
           infeasible at once and its tasks are refused;
  preempt  (after scale's tasks, on its grown pool) while `--tasks` run on cpu_workers, the
           autoscaler takes one away (its type's max_workers lowered, as `ray up` of a changed
           file does): no accepted task lost or changed; every named actor stayed on the head;
           the memory store kept its records;
  scale    `--tasks` `bench.nonce` tasks at once: the `stats` pool grows, the autoscaler adds
           cpu_workers, all succeed; then, idle, the cpu_workers are given back (printed last:
           the give-back waits for the pre-emption's run to end too).
The last line names the scenarios that ran.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray

from benchmarks._autoscaling import (
    FAKE_HEAD_NODE_ID,
    IDLE_TIMEOUT_MINUTES,
    FittedCluster,
    fitted_recipe,
    node_types_from,
    wait_for,
)
from benchmarks._common import percentile

NAMESPACE = "autoscale"
SCENARIOS = ("gpu", "scale", "preempt")


def line(scenario: str, **report: Any) -> dict[str, Any]:
    """Prints a scenario's report as one JSON line and returns it."""
    report = {"scenario": scenario, **report}
    print(json.dumps(report, default=str), flush=True)
    return report


def node_types_by_id() -> dict[str, str]:
    """Alive node id -> the fitted type it is (the fake head has a fixed id; GPU nodes are the
    gpu_workers)."""
    out = {}
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        kind = (
            "head"
            if n["NodeID"] == FAKE_HEAD_NODE_ID
            else "gpu_worker"
            if n["Resources"].get("GPU")
            else "cpu_worker"
        )
        out[n["NodeID"]] = kind
    return out


def alive_of(kind: str) -> int:
    """Alive nodes of one fitted type (the autoscaler's own count lags by an update or two)."""
    return sum(k == kind for k in node_types_by_id().values())


def hosts_where(client: Any, swarm: str) -> list[dict[str, Any]]:
    """Each alive agent host of `swarm`: its pool, node id (whole), node type and GPU ids."""
    out = []
    for host_id, handle, state in client._call(client.queen(swarm).hosts.remote):
        if state != "alive":
            continue
        try:
            info = ray.get(handle.ready.remote(), timeout=60)
        except ray.exceptions.RayActorError:
            continue  # scaled down (ray.kill) since the queen listed it: no longer a host
        out.append({"host": host_id, "node_id": info["node_id"], "gpu_ids": info["gpu_ids"]})
    kinds = node_types_by_id()
    resources = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n.get("Alive")}
    for h in out:
        h["pool"] = h["host"].split(".")[1]
        h["node_type"] = kinds.get(h["node_id"], "gone")
        offers = resources.get(h["node_id"], {})
        h["node_offers"] = sorted(
            k for k in offers if k in ("GPU", "cpu_agents") or k.startswith("accelerator")
        )
    return out


def agents(client: Any, swarm: str) -> list[dict[str, Any]]:
    return client._call(client.queen(swarm).status.remote)["agents"]


def probe(cluster: FittedCluster) -> dict[str, Any]:
    """One actor past the head's `cpu_agents`: the autoscaler adds one cpu_worker for it."""
    head = cluster._head_resources.get("cpu_agents", 0)

    @ray.remote(num_cpus=0, resources={"cpu_agents": 1})
    class Probe:
        def node(self) -> str:
            return ray.get_runtime_context().get_node_id()

    started = time.monotonic()
    actors = [Probe.remote() for _ in range(int(head) + 1)]
    nodes = ray.get([a.node.remote() for a in actors], timeout=300)
    report = line(
        "probe",
        node_up_s=round(time.monotonic() - started, 1),
        nodes=sorted(set(nodes)),
        active_nodes=cluster.active_nodes(),
    )
    for a in actors:
        ray.kill(a)
    return report


class PoolWatch(threading.Thread):
    """Records a pool's reasons, each time it changes, from the moment its queen exists (inside
    `up`, which may return after the node came) until its first agent is alive."""

    def __init__(self, swarm: str, pool: str):
        super().__init__(daemon=True)
        self.swarm, self.pool = swarm, pool
        self.reasons: list[str] = []
        self.started = time.monotonic()
        self.alive_after_s: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            try:
                queen = ray.get_actor(f"queen:{self.swarm}", namespace=NAMESPACE)
                rows = ray.get(queen.status.remote(), timeout=30)["agents"]
            except Exception:  # not created yet, or busy starting
                continue
            for row in rows:
                if row["pool"] != self.pool:
                    continue
                if row["reason"] and (not self.reasons or self.reasons[-1] != row["reason"]):
                    self.reasons.append(row["reason"])
                if row["state"] == "alive":
                    self.alive_after_s = time.monotonic() - self.started
                    self.done.set()


def gpu(client: Any, cluster: FittedCluster, watch: PoolWatch, up_s: float) -> dict[str, Any]:
    """The GPU pool's wait and where its agent runs; the H100 pool's refusal."""
    from cluster import SchedulingError

    started = time.monotonic()
    h100: list[str] = []

    def h100_infeasible() -> bool:
        (row,) = agents(client, "edge")
        h100.append(row["reason"])
        return row["reason"].startswith("infeasible")

    wait_for(h100_infeasible, 30, "edge.h100 to be reported infeasible", poll_s=0.2)
    h100_s = time.monotonic() - started
    try:
        client.submit("bench.check", {})
        refused = ""
    except SchedulingError as e:
        refused = str(e)
    wait_for(watch.done.is_set, 300, "the GPU pool's agent to start")
    return line(
        "gpu",
        up_s=round(up_s, 1),
        gpu_agent_alive_s=round(watch.alive_after_s or 0, 1),  # from the start of `up`
        gpu_reasons=watch.reasons,
        h100_reason=h100[-1],
        h100_infeasible_s=round(h100_s, 1),
        h100_refused=refused,
        hosts=hosts_where(client, "ai") + hosts_where(client, "storage"),
        active_nodes=cluster.active_nodes(),
    )


def _e2e_ms(results: list[Any]) -> list[float]:
    return [(r.timings.finished_at - r.timings.submitted_at) * 1000 for r in results if r.timings.finished_at]


def _ended(client: Any, swarm: str) -> int:
    counts = client._call(client.queen(swarm).status.remote)["tasks"]
    return counts["succeeded"] + counts["failed"] + counts["timed_out"] + counts["cancelled"]


def scale_up(client: Any, tasks: int, work_s: float) -> dict[str, Any]:
    """`tasks` at once, past what the head's agents hold: watches the `stats` pool and the
    cpu_workers grow until every task has ended. The results are read later (`scale`), so the
    pre-emption can run on the grown pool before its idle agents go."""
    stats = lambda: [a for a in agents(client, "ai") if a["pool"] == "stats"]  # noqa: E731
    before = {"agents": len(stats()), "cpu_workers": alive_of("cpu_worker"), "ended": _ended(client, "ai")}
    first = time.time()
    ids = client.submit_many("bench.nonce", [{"s": work_s}] * tasks, swarm="ai")
    alive, last_up, peak_nodes = 0, first, 0
    deadline = time.monotonic() + 600
    while _ended(client, "ai") - before["ended"] < tasks and time.monotonic() < deadline:
        now_alive = sum(a["state"] == "alive" for a in stats())
        if now_alive > alive:
            alive, last_up = now_alive, time.time()
        peak_nodes = max(peak_nodes, alive_of("cpu_worker"))
        time.sleep(0.5)
    # Where the grown pool ran, before its idle agents go: the gpu_worker's free CPUs offer no
    # cpu_agents, so none of them.
    placed = sorted({h["node_type"] for h in hosts_where(client, "ai") if h["pool"] == "stats"})
    return {
        "ids": ids,
        "tasks": tasks,
        "agents_before": before["agents"],
        "agents_peak": alive,
        "cpu_workers_before": before["cpu_workers"],
        "cpu_workers_peak": peak_nodes,
        "stats_ran_on": placed,
        "scale_up_s": round(last_up - first, 1),
    }


def where_hosts_sit(client: Any, cluster: FittedCluster) -> dict[str, Any]:
    """One sample for the give-back wait: each agent host's pool and node type, and the
    `cpu_agents` the autoscaler sees held on each cpu_worker."""
    hosts = hosts_where(client, "ai") + hosts_where(client, "storage")
    kinds = node_types_by_id()
    usage = _load_metrics().get("usage_by_node") or {}  # by node id: the fake nodes' "ip"
    return {
        "hosts": sorted(f"{h['pool']}@{h['node_type']}" for h in hosts),
        # What the autoscaler sees held on each worker: a node holding any is never idle.
        "cpu_agents_held": {
            f"{kind}:{node[-2:]}": (usage.get(node, {}).get("cpu_agents") or [None])[0]
            for node, kind in kinds.items()
            if kind == "cpu_worker"
        },
        "active_nodes": cluster.active_nodes(),
    }


def _load_metrics() -> dict[str, Any]:
    """The autoscaler's last load report (usage and idle time by node), from the KV."""
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    return json.loads(raw).get("load_metrics_report", {}) if raw else {}


def give_back(client: Any, cluster: FittedCluster, timeout_s: float) -> dict[str, Any]:
    """Waits, idle, for every cpu_worker to be given back; a sample each 2 s of where the hosts
    sit and what the autoscaler sees held on each worker, kept for the report (and the error)."""
    started, trace, last = time.monotonic(), [], 0.0

    def all_back() -> bool:
        nonlocal last
        if time.monotonic() - last >= 2:
            last = time.monotonic()
            trace.append({"t_s": round(last - started, 1), **where_hosts_sit(client, cluster)})
        return alive_of("cpu_worker") == 0 and not cluster.active_nodes().get("cpu_worker")

    try:
        wait_for(all_back, timeout_s, "the cpu_workers to be given back")
    except TimeoutError as e:
        raise TimeoutError(f"{e}; where the hosts sat: {json.dumps(trace)}") from None
    trace.append({"t_s": round(time.monotonic() - started, 1), **where_hosts_sit(client, cluster)})
    return {"give_back_s": round(time.monotonic() - started, 1), "give_back_trace": trace}


def scale(client: Any, burst: dict[str, Any], given_back: dict[str, Any]) -> dict[str, Any]:
    """The scale-up's report: its tasks' results and latencies, then the give-back."""
    results = [client.result(t, timeout_s=60) for t in burst.pop("ids")]
    e2e = _e2e_ms(results)
    return line(
        "scale",
        **burst,
        succeeded=sum(r.ok for r in results),
        p50_ms=round(percentile(e2e, 50), 1),
        p99_ms=round(percentile(e2e, 99), 1),
        **given_back,
    )


def write_notes(n: int = 100) -> int:
    """Writes `n` records to the global memory store (before the pre-emption, which must not
    lose them); returns how many."""
    store = ray.get_actor("memory:global", namespace=NAMESPACE)
    ray.get(
        store.upsert.remote([{"id": f"n{i}", "namespace": "global", "text": f"note {i}"} for i in range(n)])
    )
    return n


def preempt(
    client: Any, cluster: FittedCluster, tasks: int, work_s: float, notes_written: int
) -> dict[str, Any]:
    """The autoscaler takes a busy cpu_worker away mid-run (its type's `max_workers` lowered,
    then put back once it is gone, as a spot node is replaced)."""
    from ray.util.state import list_actors

    from benchmarks._chaos import run_tasks

    store = ray.get_actor("memory:global", namespace=NAMESPACE)
    limit = cluster._config["available_node_types"]["cpu_worker"]["max_workers"]
    taken: dict[str, Any] = {}

    def take_one() -> None:
        if "gone" in taken:
            return
        workers = {i for i, kind in node_types_by_id().items() if kind == "cpu_worker"}
        if "before" in taken:
            if gone := set(taken["before"]) - workers:
                taken.update(gone=sorted(gone), after_s=round(time.monotonic() - taken["at"], 1))
                cluster.set_max_workers("cpu_worker", limit)
            return
        busy = {h["node_id"] for h in hosts_where(client, "ai") if h["pool"] == "stats"}
        if workers and workers <= busy:  # every cpu_worker busy: whichever goes, work is lost
            taken.update(before=sorted(workers), at=time.monotonic())
            cluster.set_max_workers("cpu_worker", len(workers) - 1)

    retried = client._call(client.queen("ai").status.remote)["tasks"]["retried"]
    started = time.monotonic()
    report = run_tasks(client, "ai", tasks, work_s=work_s, chaos=take_one, chaos_every_s=1.0, timeout_s=600)
    run_s = time.monotonic() - started
    retried = client._call(client.queen("ai").status.remote)["tasks"]["retried"] - retried
    if "before" in taken and "gone" not in taken:
        wait_for(
            lambda: set(taken["before"]) - set(node_types_by_id()), 60, "the autoscaler to remove a worker"
        )
        taken["gone"] = sorted(set(taken["before"]) - set(node_types_by_id()))
    cluster.set_max_workers("cpu_worker", limit)
    report.node_kills = len(taken.get("gone", []))
    # This cluster's address, never "auto": that finds the newest Ray on the machine, maybe
    # another's (or one gone, whose GCS never answers).
    alive = list_actors(
        address=cluster.address,
        filters=[("ray_namespace", "=", NAMESPACE), ("state", "=", "ALIVE")],
        limit=10_000,
    )
    off_head = {a.name: a.node_id for a in alive if a.name and a.node_id != FAKE_HEAD_NODE_ID}
    return line(
        "preempt",
        **report.as_dict(),
        run_s=round(run_s, 1),
        # Attempts lost with the worker's agents and run again elsewhere: the pre-emption hit work.
        retried=retried,
        workers_before=taken.get("before", []),
        removed=taken.get("gone", []),
        removed_after_s=taken.get("after_s"),  # from the lowered max_workers to the node gone
        named_actors=sorted(a.name for a in alive if a.name),
        named_off_head=off_head,
        memory_records=ray.get(store.stats.remote())["records"],
        memory_written=notes_written,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"of {SCENARIOS}, or 'probe'")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--work-s", type=float, default=0.5, help="seconds each task waits")
    args = parser.parse_args()
    wanted = args.scenarios.split(",")
    head, workers, top = node_types_from()
    cluster = FittedCluster(head, workers, **top)
    directory = Path(tempfile.mkdtemp(prefix="sr-as-data-"))
    reports, ok = [], False
    try:
        cluster.start()
        from cluster import Client, connect, down, load_config, up

        connect(cluster.address, NAMESPACE)
        if "probe" in wanted:
            reports.append(probe(cluster))
        else:
            config = load_config({**fitted_recipe(directory), "namespace": NAMESPACE})
            watch = PoolWatch("ai", "gpu")
            watch.start()
            started = time.monotonic()
            up(config)
            client = Client(NAMESPACE)
            pool = config.swarms["ai"].pools["stats"]
            if "gpu" in wanted:
                reports.append(gpu(client, cluster, watch, time.monotonic() - started))
            if "scale" in wanted:
                written = write_notes() if "preempt" in wanted else 0
                burst = scale_up(client, args.tasks, args.work_s)
                if "preempt" in wanted:
                    # At once, on the grown pool and its workers: longer tasks, so the run
                    # still goes on when the autoscaler has taken a worker.
                    reports.append(preempt(client, cluster, args.tasks, 2 * args.work_s, written))
                # The pool's idle time, each worker's idle timeout, and room for a slow machine.
                timeout_s = pool.scale_down_idle_s + 60 * IDLE_TIMEOUT_MINUTES + 90
                reports.append(scale(client, burst, give_back(client, cluster, timeout_s)))
            down(NAMESPACE)
        ok = True
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(directory, ignore_errors=True)
        if ok:
            shutil.rmtree(cluster.temp_dir, ignore_errors=True)
        else:  # Ray's logs of the run, the autoscaler's (monitor.*) among them
            print(f"kept {cluster.temp_dir}", file=sys.stderr)
    print(json.dumps({"scenarios": [r["scenario"] for r in reports]}))


if __name__ == "__main__":
    main()
