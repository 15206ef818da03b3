"""The tool-using agent's own cost per step, over the model and tool calls it makes.

One local Ray; a swarm `agents` whose ToolAgent (colocated, as configs/local.yaml has it) asks a
scripted OpenAI-compatible server on 127.0.0.1 that answers at once (tests/scripted_provider.py)
and calls `bench.noop` of the swarm `tools` (an agent that returns at once) as its tool. Each
task takes `--steps` model calls: a tool call at each but the last, which answers. Per task,
the loop's own cost is its run time (the queen's started -> finished) less, measured in the
same run from this process, the same HTTP requests sent raw (the very bodies the agent sent,
replayed with httpx) and as many raw task round trips (submit + result to the tools queen, as
the agent's tool calls make). What is left per step: routing the call, journaling the model's
answer, the child's id and the tool's result with the task (each an fdatasync'ed write, by
default), building messages. Printed: p50 per step in ms and the ratio of the loop's time to
the raw calls'; the last line is one JSON object. `measure()` returns the same dict.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import httpx
import ray

from actors import Task
from benchmarks._common import emit, percentile
from cluster import Client, down, load_config, up
from tests.scripted_provider import ScriptedProvider, tool_call

NAMESPACE = "bench-agent-loop"


def config(url: str, steps: int, sync: bool) -> dict[str, Any]:
    agent = {
        "class": "actors:ToolAgent",
        "params": {"model": "m", "base_url": url, "tools": ["bench.noop"], "max_steps": steps},
    }
    journal = {"sync": sync}
    return {
        "namespace": NAMESPACE,
        "swarms": {
            "agents": {"journal": journal, "pools": {"agent": {"agent": agent, "colocate": True}}},
            "tools": {
                "journal": journal,
                "pools": {"noop": {"agent": {"class": "benchmarks._agents:NoopAgent"}}},
            },
        },
    }


def measure(tasks: int = 30, steps: int = 4, sync: bool = True) -> dict[str, Any]:
    """Runs the loop on a system of its own (on the Ray this process is connected to, else a
    new local one) and returns {"step_overhead_p50_ms", "step_overhead_p90_ms", "ratio",
    "loop_step_p50_ms", "raw_http_p50_ms", "raw_task_p50_ms", "tasks", "steps", "sync"}."""
    provider = ScriptedProvider()

    def respond(body: dict[str, Any]) -> Any:
        done = sum(1 for m in body["messages"] if m["role"] == "tool")
        if done < steps - 1:
            return {"tool_calls": [tool_call("bench_noop", {}, f"call_{done}")]}
        return "done"

    provider.respond = respond
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(namespace=NAMESPACE, logging_level="WARNING", log_to_driver=False)
    cfg = load_config(config(provider.url, steps, sync))
    up(cfg)
    try:
        client = Client(cfg.namespace)
        agents, tools = client.queen("agents"), client.queen("tools")
        question = Task(capability="agent.run", payload={"input": "go"})
        ray.get(agents.run.remote(question))  # warm: the tool catalog, connections
        provider.requests.clear()
        results = [ray.get(agents.run.remote(question)) for _ in range(tasks)]
        assert all(r.ok and r.output["stopped"] == "answer" for r in results), results[0]
        bodies = list(provider.requests)
        assert len(bodies) == tasks * steps, len(bodies)

        with httpx.Client(base_url=provider.url + "/") as http:
            http.post("chat/completions", json=bodies[0])  # warm
            raw_http = []
            for body in bodies:
                t = time.perf_counter()
                http.post("chat/completions", json=body).raise_for_status()
                raw_http.append((time.perf_counter() - t) * 1000)

        def round_trip() -> float:
            task = Task(id=f"tools:{time.perf_counter_ns():x}", capability="bench.noop")
            t = time.perf_counter()
            ray.get(tools.submit.remote(task))
            assert ray.get(tools.result.remote(task.id, 60)).ok
            return (time.perf_counter() - t) * 1000

        round_trip()  # warm
        raw_task = [round_trip() for _ in range(tasks * (steps - 1))]
    finally:
        down(cfg.namespace)
        provider.close()
        if started_ray:
            ray.shutdown()

    http_ms, task_ms = statistics.median(raw_http), statistics.median(raw_task)
    loop_ms = [(r.timings.run_s or 0.0) * 1000 for r in results]
    raw_per_task = steps * http_ms + (steps - 1) * task_ms
    per_step = [(ms - raw_per_task) / steps for ms in loop_ms]
    return {
        "step_overhead_p50_ms": statistics.median(per_step),
        "step_overhead_p90_ms": percentile(per_step, 90),
        "ratio": statistics.median(loop_ms) / raw_per_task,
        "loop_step_p50_ms": statistics.median(loop_ms) / steps,
        "raw_http_p50_ms": http_ms,
        "raw_task_p50_ms": task_ms,
        "tasks": tasks,
        "steps": steps,
        "sync": sync,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=30, help="agent tasks, run one after another")
    parser.add_argument("--steps", type=int, default=4, help="model calls per task (tool calls: one fewer)")
    parser.add_argument("--no-sync", action="store_true", help="journal without fdatasync")
    args = parser.parse_args()
    result = measure(args.tasks, args.steps, sync=not args.no_sync)
    print(
        f"per step: loop {result['loop_step_p50_ms']:.2f} ms p50, of which raw HTTP "
        f"{result['raw_http_p50_ms']:.2f} ms and a raw task round trip {result['raw_task_p50_ms']:.2f} ms; "
        f"the loop's own cost {result['step_overhead_p50_ms']:.2f} ms p50 "
        f"({result['step_overhead_p90_ms']:.2f} p90), ratio {result['ratio']:.2f}"
    )
    emit(result)


if __name__ == "__main__":
    main()
