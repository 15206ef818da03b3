"""Queen dispatch overhead against raw Ray actor calls to the same no-op agents.

Three paths, one run, one local Ray:
  raw        ray.get(host.handle.remote(agent, task)) straight to the agent host actors;
  queen      queen.run_many.remote(batch): the queen queues each task, picks the least-loaded
             agent and calls it, one Ray call per task from queen to agent;
  delegated  the same batches sent to a swarm without the capability, which delegates each task.
Throughput pipelines `--tasks` tasks at once (raw: one call each; queen: batches of `--batch`);
`queen_single_call_tasks_per_s` also reports one `run` call per task. Latency (added_p50_ms)
is one task at a time: `queen.run` against one raw call.
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
    noop = {
        "agent": {"class": "actors:NoopAgent", "max_concurrent_tasks": 64},
        "agents_per_actor": agents,
        "min_agents": agents,
        "max_agents": agents,
    }
    other = {"agent": {"class": "actors:NoopAgent", "capabilities": ["bench.other"]}}
    return {
        "namespace": "bench-dispatch",
        "swarms": {
            "back": {"pools": {"noop": noop}},
            "front": {"pools": {"other": other}},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000, help="tasks per throughput round")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (best is kept)")
    parser.add_argument("--latency-calls", type=int, default=500)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100, help="tasks per run_many call")
    args = parser.parse_args()

    ray.init(namespace="bench-dispatch", logging_level="WARNING", log_to_driver=False)
    cfg = load_config(config(args.agents))
    up(cfg)
    client = Client(cfg.namespace)
    back, front = client.queen("back"), client.queen("front")
    hosts = ray.get(back.hosts.remote())
    targets = [(handle, aid) for _, handle, _ in hosts for aid in ray.get(handle.ready.remote())["agents"]]
    task = Task(capability="bench.noop")
    rr = itertools.cycle(targets)

    def raw_batch():
        ray.get([h.handle.remote(a, task) for h, a in itertools.islice(rr, args.tasks)])

    def queen_batch(queen):
        batches = [[task] * args.batch for _ in range(args.tasks // args.batch)]
        return lambda: ray.get([queen.run_many.remote(b) for b in batches])

    def queen_single():
        ray.get([back.run.remote(task) for _ in range(args.tasks)])

    paths = {
        "raw": raw_batch,
        "queen": queen_batch(back),
        "delegated": queen_batch(front),
        "single": queen_single,
    }
    for fn in paths.values():  # warm every path
        fn()
    n = args.tasks // args.batch * args.batch
    rps = {
        k: max(rate(fn, n if k in ("queen", "delegated") else args.tasks) for _ in range(args.rounds))
        for k, fn in paths.items()
    }
    raw_rps, queen_rps, delegated_rps = rps["raw"], rps["queen"], rps["delegated"]

    h, a = targets[0]
    raw_ms = latencies_ms(lambda: ray.get(h.handle.remote(a, task)), args.latency_calls)
    queen_ms = latencies_ms(lambda: ray.get(back.run.remote(task)), args.latency_calls)
    statuses = ray.get(back.status.remote())["tasks"]
    assert statuses["failed"] == 0 and statuses["timed_out"] == 0, statuses

    down(cfg.namespace)
    ray.shutdown()
    raw_p50, queen_p50 = statistics.median(raw_ms), statistics.median(queen_ms)
    print(
        f"raw {raw_rps:.0f}/s, queen {queen_rps:.0f}/s, delegated {delegated_rps:.0f}/s; "
        f"p50 raw {raw_p50:.3f} ms, queen {queen_p50:.3f} ms"
    )
    emit(
        {
            "raw_calls_per_s": raw_rps,
            "queen_tasks_per_s": queen_rps,
            "delegated_tasks_per_s": delegated_rps,
            "queen_single_call_tasks_per_s": rps["single"],
            "ratio_queen": queen_rps / raw_rps,
            "ratio_delegated": delegated_rps / raw_rps,
            "added_p50_ms": queen_p50 - raw_p50,
        }
    )


if __name__ == "__main__":
    main()
