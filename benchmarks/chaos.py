"""Chaos: nothing accepted is lost while agents, queens, the registry and nodes are killed.

Scenarios, one run:
  agents    `--tasks` tasks while a random agent host is killed every 200 ms;
  queen     `--tasks` tasks, the queen killed once with ray.kill(no_restart=False), then again
            with SIGKILL to its process; Ray restarts it and it replays its journal;
  registry  the registry killed mid-run; routing must resume from heartbeats;
  steady    tasks submitted without pause for `--steady-s` seconds while an agent is killed
            every 0.5 s, with the journal compacted past 64 KiB: compactions must keep up, so
            `journal_bytes_max` stays bounded however long it runs;
  node      a 3-node `ray.cluster_utils.Cluster` (logical CPUs and GPUs): the node holding the
            queen is removed mid-run; queen, monitor, registry and agents re-form on the others.
  worker    the cluster recipe (README "Operations"): a control node and two workers, the
            system's state pinned to the control node by `control_resources`; a worker is
            removed mid-run, as an autoscaler does: agents re-form, every state-holding actor
            stays where it was, and the memory store keeps every record.
  services  (not in `all`) the facts and AI services with auth on under `--duration` seconds of
            load while a facts shard, the facts ingress, the AI gateway, the key authority and
            the extractor are killed in turn, after `--baseline-s` of the same load without
            kills (benchmarks/_chaos_services.py). Its last line holds its own counts: every
            acknowledged write read back, each key held to its limit, 5xx other than 503, the
            audit record of each write, and the seconds each part took to answer again.
Each swarm scenario counts `lost` (accepted tasks without a succeeded result) and `duplicate_results`
(results that changed between two reads). The last line sums them as JSON, with the steady
scenario's `journal_bytes_max` and `compactions`.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

import ray

from benchmarks._chaos import (
    ChaosReport,
    chaos_swarm,
    kill_queen,
    kill_random_agent,
    kill_registry,
    run_steady,
    run_tasks,
)
from benchmarks._common import emit
from cluster import Client, down, load_config, up

ROOT = Path(__file__).resolve().parent.parent


def single_node(tasks: int, kill_every_s: float, seed: int) -> ChaosReport:
    """Agent, queen and registry kills on one local Ray."""
    ray.init(namespace="chaos", logging_level="WARNING", log_to_driver=False)
    config = load_config({"namespace": "chaos", "swarms": {"work": chaos_swarm(agents=4)}})
    up(config)
    client = Client(config.namespace)
    rng = random.Random(seed)
    total = ChaosReport()

    kills: list[bool] = []
    report = run_tasks(
        client,
        "work",
        tasks,
        chaos=lambda: kills.append(kill_random_agent(client, "work", rng)),
        chaos_every_s=kill_every_s,
    )
    report.agent_kills = sum(kills)
    print(f"agents:   {report.as_dict()}")
    total = total.add(report)

    for how in ("ray", "process"):
        done: list[str] = []

        def kill_once(how=how, done=done):
            if not done:
                kill_queen(client, "work", how)
                done.append(how)

        report = run_tasks(client, "work", tasks, work_s=0.05, chaos=kill_once, chaos_every_s=1.0)
        report.queen_kills = len(done)
        print(f"queen ({how}): {report.as_dict()}")
        total = total.add(report)

    # The marker lives in the registry's journaled key-value store: it must survive the kill,
    # while the swarm table is rebuilt from heartbeats.
    client._call(lambda: client.registry.kv_put.remote("chaos/marker", "kept"))
    kill_registry(client)
    started = time.monotonic()
    while True:
        try:
            assert client.run("bench.nonce", {}).ok  # routed: the registry is back and knows "work"
            break
        except Exception:
            if time.monotonic() - started > 60:
                raise
            time.sleep(0.2)
    assert client._call(lambda: client.registry.kv_get.remote("chaos/marker")) == "kept"
    print(f"registry: routing resumed {time.monotonic() - started:.1f} s after the kill; KV store kept")
    total.registry_kills += 1

    down(config.namespace)
    ray.shutdown()
    return total


def steady(duration_s: float, seed: int) -> ChaosReport:
    """Tasks arriving without pause while agents are killed; the journal compacts under load."""
    ray.init(namespace="chaos-steady", logging_level="WARNING", log_to_driver=False)
    swarm = chaos_swarm(agents=4, journal={"compact_after_mb": 0.0625})
    swarm["queen"]["keep_results"] = 2000  # old results go, so the live state is bounded
    config = load_config({"namespace": "chaos-steady", "swarms": {"work": swarm}})
    up(config)
    client = Client(config.namespace)
    rng = random.Random(seed)
    kills: list[bool] = []
    report = run_steady(
        client, "work", duration_s, chaos=lambda: kills.append(kill_random_agent(client, "work", rng))
    )
    report.agent_kills = sum(kills)
    print(f"steady:   {report.as_dict()}")
    down(config.namespace)
    ray.shutdown()
    return report


def multi_node(tasks: int) -> ChaosReport:
    """Removes the node that holds the queen from a 3-node local cluster mid-run."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=4, num_gpus=1, resources={"control": 1}) for _ in range(2)]
    ray.init(address=cluster.address, namespace="chaos-nodes", logging_level="WARNING", log_to_driver=False)
    swarm = chaos_swarm(agents=4)
    swarm["pools"]["nonce"]["resources"] = {"num_gpus": 0.25}  # two nodes' GPUs, either can hold all
    config = load_config(
        {"namespace": "chaos-nodes", "control_resources": {"control": 0.01}, "swarms": {"work": swarm}}
    )
    up(config)
    client = Client(config.namespace)
    removed: list[str] = []

    def remove_queen_node():
        if removed:
            return
        node_id = client._call(client.queen("work").where.remote)["node_id"]
        (node,) = [n for n in workers if n.node_id == node_id]
        cluster.remove_node(node)
        removed.append(node_id)

    report = run_tasks(client, "work", tasks, work_s=0.05, chaos=remove_queen_node, chaos_every_s=1.0)
    report.node_kills = len(removed)
    after = client._call(client.queen("work").where.remote)["node_id"]
    assert after != removed[0], "the queen did not move off the removed node"
    print(f"node:     {report.as_dict()}; queen moved to node {after[:8]}")
    down(config.namespace)
    ray.shutdown()
    cluster.shutdown()
    return report


def worker_removed(tasks: int) -> ChaosReport:
    """Removes a worker node (no `control`) mid-run, as the autoscaler does when it scales down."""
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors

    ns = "chaos-workers"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "resources": {"control": 1}})
    workers = [cluster.add_node(num_cpus=4) for _ in range(2)]
    ray.init(address=cluster.address, namespace=ns, logging_level="WARNING", log_to_driver=False)
    data = tempfile.mkdtemp(prefix="chaos-workers-")
    swarm = chaos_swarm(agents=4, memory={"namespaces": ["work"], "memory": {"path": data}})
    config = load_config({"namespace": ns, "control_resources": {"control": 0.01}, "swarms": {"work": swarm}})
    up(config)
    client = Client(ns)
    store = ray.get_actor("memory:work", namespace=ns)
    notes = [{"id": f"n{i}", "namespace": "work", "text": f"note {i}"} for i in range(100)]
    ray.get(store.upsert.remote(notes))
    removed: list[str] = []

    def remove_a_worker():
        if not removed:
            cluster.remove_node(workers[0])
            removed.append(workers[0].node_id)

    report = run_tasks(client, "work", tasks, work_s=0.05, chaos=remove_a_worker, chaos_every_s=1.0)
    report.node_kills = len(removed)
    alive = list_actors(filters=[("ray_namespace", "=", ns), ("state", "=", "ALIVE")], limit=10_000)
    where = {a.name: a.node_id for a in alive if a.name}
    control = cluster.head_node.node_id
    held = {name: node == control for name, node in where.items()}
    assert held and all(held.values()), f"state-holding actors off the control node: {held}"
    kept = ray.get(store.stats.remote())["records"]
    assert kept == len(notes), f"the memory store holds {kept} of {len(notes)} records"
    print(f"worker:   {report.as_dict()}; {sorted(held)} stayed on the control node, {kept} records kept")
    down(ns)
    ray.shutdown()
    cluster.shutdown()
    shutil.rmtree(data, ignore_errors=True)
    return report


def services(duration_s: float, baseline_s: float, port: int, seed: int) -> dict:
    """The services' chaos run (benchmarks/_chaos_services.py) on a local Ray of its own."""
    import os

    from benchmarks._chaos_services import (
        deploy_services,
        directory_for,
        remove_services,
        run_services_chaos,
    )
    from cluster._private.connection import HEAD_ENV

    for key, value in HEAD_ENV.items():  # the one-hop ingress `swarm up` runs with
        os.environ.setdefault(key, value)
    system = "chaos-services"
    ray.init(namespace=system, logging_level="WARNING", log_to_driver=False)
    directory = directory_for(system)
    deployed = deploy_services(system, port, directory)
    report = run_services_chaos(deployed, duration_s, baseline_s, seed)
    remove_services(deployed)
    ray.shutdown()
    shutil.rmtree(directory, ignore_errors=True)
    for line in report.examples:
        print(f"  {line}")
    print(f"statuses: {dict(sorted(report.statuses.items()))}")
    print(f"recovery: {report.recover_s}")
    return report.figures()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per scenario")
    parser.add_argument("--kill-every-s", type=float, default=0.2)
    parser.add_argument("--steady-s", type=float, default=180.0, help="length of the steady scenario")
    parser.add_argument(
        "--scenario", choices=["all", "single", "steady", "node", "worker", "services"], default="all"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=180.0, help="services: seconds of load with kills")
    parser.add_argument("--baseline-s", type=float, default=30.0, help="services: seconds without kills")
    parser.add_argument("--port", type=int, default=8766, help="services: Serve's HTTP port")
    args = parser.parse_args()
    if args.scenario == "services":
        emit(services(args.duration, args.baseline_s, args.port, args.seed))
        return
    total = ChaosReport()
    if args.scenario in ("all", "single"):
        total = total.add(single_node(args.tasks, args.kill_every_s, args.seed))
    if args.scenario in ("all", "steady"):
        total = total.add(steady(args.steady_s, args.seed))
    if args.scenario in ("all", "node"):
        total = total.add(multi_node(args.tasks))
    if args.scenario in ("all", "worker"):
        total = total.add(worker_removed(args.tasks))
    result = total.as_dict()
    del result["registry_kills"]
    emit(result)


if __name__ == "__main__":
    main()
