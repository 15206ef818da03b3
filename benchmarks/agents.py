"""How many agents one node holds, all busy at once.

Agents are packed `--per-actor` to a Ray actor (the pool's `agents_per_actor`), each running an
I/O-bound task (an asyncio wait standing in for a call to a model or an API). Every agent gets
one task; the run checks that all of them were running at the same moment.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import ray

from actors import Task
from benchmarks._common import emit, ray_rss_gb
from cluster import Client, down, load_config, up

ROOT = Path(__file__).resolve().parent.parent


async def wait(payload: dict) -> float:
    """An I/O-bound unit of work: waits `s` seconds, returns when it started."""
    started = time.time()
    await asyncio.sleep(payload["s"])
    return started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--per-actor", type=int, default=250)
    parser.add_argument("--work-s", type=float, default=2.0, help="seconds each task waits")
    args = parser.parse_args()

    ray.init(
        namespace="bench-agents",
        logging_level="WARNING",
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    cfg = load_config(
        {
            "namespace": "bench-agents",
            "swarms": {
                "fleet": {
                    "queen": {"max_queued_tasks": args.agents * 2},
                    "pools": {
                        "io": {
                            "agent": {
                                "class": "actors:CallableAgent",
                                "capabilities": ["bench.wait"],
                                "params": {"function": "benchmarks.agents:wait"},
                            },
                            "agents_per_actor": args.per_actor,
                            "min_agents": args.agents,
                            "max_agents": args.agents,
                            "ready_timeout_s": 300,
                        }
                    },
                }
            },
        }
    )
    t = time.perf_counter()
    state = up(cfg)
    start_s = time.perf_counter() - t
    alive = sum(a["state"] == "alive" for s in state["swarms"] for a in s["agents"])
    rss_gb = ray_rss_gb()

    client = Client(cfg.namespace)
    queen = client.queen("fleet")
    task = Task(capability="bench.wait", payload={"s": args.work_s})
    t = time.perf_counter()
    results = ray.get([queen.run_many.remote([task] * 100) for _ in range(args.agents // 100)])
    wall = time.perf_counter() - t
    flat = [r for batch in results for r in batch]
    assert all(r.ok for r in flat), [r.error for r in flat if not r.ok][:3]
    starts = [r.output for r in flat]
    distinct = len({r.agent_id for r in flat})
    all_at_once = max(starts) - min(starts) < args.work_s  # the last began before the first ended
    down(cfg.namespace)
    ray.shutdown()
    print(
        f"{alive} agents alive in {start_s:.1f} s on {args.agents // args.per_actor} actors; "
        f"{distinct} ran a task, all busy at once: {all_at_once}; "
        f"start spread {max(starts) - min(starts):.2f} s"
    )
    emit(
        {
            "agents": alive if all_at_once and distinct == alive else 0,
            "start_s": start_s,
            "rss_gb": rss_gb,
            "tasks_per_s": len(flat) / wall,
        }
    )


if __name__ == "__main__":
    main()
