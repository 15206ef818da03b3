"""Queen dispatch overhead against raw Ray actor calls to the same no-op agents.

Paths measured in one run on one local Ray:
  raw        ray.get(host.handle.remote(agent, task)): straight to the agent host actors;
  queen      queen.run_many.remote(batch) on a swarm whose agents live in their own host actor:
             the queen queues each task, picks the least-loaded agent and calls it (a second
             Ray call per task, queen to host);
  single     queen.run.remote(task), one call per task, same swarm;
  delegated  the same batches sent to a swarm without the capability, which delegates each task;
  colocated  queen.run.remote(task) on a swarm whose pool has `colocate: true`: the agents live
             in the queen's process, so a task costs one Ray call, as a raw call does;
  colocated_nosync  the same with `journal.sync: false` (no fdatasync per journal write).
Every queen journals its tasks (the default: fdatasync'ed); `run` costs one journal write.
Throughput pipelines `--tasks` tasks at once (best of `--rounds`); latency is one task at a time.
The headline fields (ratio_queen, added_p50_ms) are for agents in their own actors, the default.
"""

from __future__ import annotations

import argparse
import itertools
import statistics

import ray

from actors import Task
from benchmarks._common import emit, latencies_ms, rate
from cluster import Client, down, load_config, up


def config(agents: int) -> dict:
    def noop(**extra) -> dict:
        agent = {"class": "benchmarks._agents:NoopAgent", "max_concurrent_tasks": 64}
        return {
            "agent": agent,
            "agents_per_actor": agents,
            "min_agents": agents,
            "max_agents": agents,
            **extra,
        }

    other = {"agent": {"class": "benchmarks._agents:NoopAgent", "capabilities": ["bench.other"]}}
    return {
        "namespace": "bench-dispatch",
        "swarms": {
            "back": {"pools": {"noop": noop()}},
            "near": {"pools": {"noop": noop(colocate=True)}, "priority": -1},
            # The same, journaling without fdatasync: durable across process crashes only.
            "near_nosync": {
                "pools": {"noop": noop(colocate=True)},
                "priority": -2,
                "journal": {"sync": False},
            },
            "front": {"pools": {"other": other}},
        },
        # front must delegate to `back`, the swarm whose agents live in their own actor.
        "registry": {"conflict_policy": "priority"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000, help="tasks per throughput round")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (best is kept)")
    parser.add_argument("--latency-calls", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100, help="tasks per run_many call")
    args = parser.parse_args()

    ray.init(namespace="bench-dispatch", logging_level="WARNING", log_to_driver=False)
    cfg = load_config(config(args.agents))
    up(cfg)
    client = Client(cfg.namespace)
    back, near, front, nosync = (client.queen(s) for s in ("back", "near", "front", "near_nosync"))
    hosts = ray.get(back.hosts.remote())
    targets = [(handle, aid) for _, handle, _ in hosts for aid in ray.get(handle.ready.remote())["agents"]]
    task = Task(capability="bench.noop")
    rr = itertools.cycle(targets)
    n_batched = args.tasks // args.batch * args.batch

    def raw():
        ray.get([h.handle.remote(a, task) for h, a in itertools.islice(rr, args.tasks)])

    def batched(queen):
        return lambda: ray.get(
            [queen.run_many.remote([task] * args.batch) for _ in range(n_batched // args.batch)]
        )

    def single(queen):
        return lambda: ray.get([queen.run.remote(task) for _ in range(args.tasks)])

    paths = {
        "raw": (raw, args.tasks),
        "queen": (batched(back), n_batched),
        "single": (single(back), args.tasks),
        "delegated": (batched(front), n_batched),
        "colocated": (single(near), args.tasks),
    }
    for fn, _ in paths.values():  # warm every path
        fn()
    rps = {k: max(rate(fn, n) for _ in range(args.rounds)) for k, (fn, n) in paths.items()}

    h, a = targets[0]
    p50 = {
        name: statistics.median(latencies_ms(fn, args.latency_calls))
        for name, fn in {
            "raw": lambda: ray.get(h.handle.remote(a, task)),
            "queen": lambda: ray.get(back.run.remote(task)),
            "colocated": lambda: ray.get(near.run.remote(task)),
            "colocated_nosync": lambda: ray.get(nosync.run.remote(task)),
        }.items()
    }
    for queen in (back, near):
        counts = ray.get(queen.status.remote())["tasks"]
        assert counts["failed"] == counts["timed_out"] == 0, counts
    assert ray.get(front.status.remote())["tasks"]["delegated"] > 0
    down(cfg.namespace)
    ray.shutdown()

    print("tasks/s: " + ", ".join(f"{k} {v:.0f}" for k, v in rps.items()))
    print("p50 ms:  " + ", ".join(f"{k} {v:.3f}" for k, v in p50.items()))
    emit(
        {
            "raw_calls_per_s": rps["raw"],
            "queen_tasks_per_s": rps["queen"],
            "delegated_tasks_per_s": rps["delegated"],
            "ratio_queen": rps["queen"] / rps["raw"],
            "ratio_delegated": rps["delegated"] / rps["raw"],
            "added_p50_ms": p50["queen"] - p50["raw"],
            "queen_single_call_tasks_per_s": rps["single"],
            "ratio_queen_single_call": rps["single"] / rps["raw"],
            "colocated_tasks_per_s": rps["colocated"],
            "ratio_colocated": rps["colocated"] / rps["raw"],
            "colocated_added_p50_ms": p50["colocated"] - p50["raw"],
            "colocated_nosync_added_p50_ms": p50["colocated_nosync"] - p50["raw"],
        }
    )


if __name__ == "__main__":
    main()
