"""A fleet of tool-using LLM agents on one node, against the engine alone and against LangGraph.

One local Ray started as `swarm up` starts it (HAProxy ingress, Serve's gRPC data plane:
`HEAD_ENV`), and a system on it as configs/local.yaml builds one: the AI service (auth on, the
model colocated in the gateway unless `--no-colocate`, the embedder) serving the default model
(SmolLM2-135M-Instruct) or, with `--model tiny`, a tiny random-weight one, or with `--model
instant` an OpenAI-compatible endpoint that answers at once (benchmarks/_instant_model.py, a provider of the
service: what the frameworks cost when the model costs nothing; no engine baseline then); a
swarm `fleet` whose colocated pool of ToolAgents runs `--agents` tasks at once (`--pool-agents`
agents, each with as many concurrent tasks as that takes); and a swarm `tools` whose
`bench.check` (no arguments; returns at once) is the agents' one tool. Each task is two model
calls: `first_tool_choice: required` (the call is valid by construction), then `tool_choice:
none`, an answer; `--max-tokens` per call.

Measured in the same run:
- the fleet: every task submitted together (`Client.submit_many`); completion tokens per
  second over the wall time, task latency p50 / p99 (submitted -> finished), the resident
  memory of Ray's processes, and the engine's counters (requests, busy time, and the mean rows
  of its decode passes, `served_mean_batch`);
- LangGraph (the `bench` extra): the same tasks through `langgraph.prebuilt.create_react_agent`
  with `langchain_openai.ChatOpenAI` pointed at the same service, all at once on one asyncio
  loop in this process (the httpx pool raised to match); the same tool (a Python function that
  returns "null", as the check's result reads), the same system message, max tokens and tool
  choices (a model picked per step: required, then none), parallel tool calls off;
- the engine alone (after the system is down, in this process: no Ray, no HTTP): the very chat
  requests the agents sent (rebuilt from each task's output, checked by their prompt tokens)
  through the `ModelServer` the gateway runs, all queued at once, at each `--batch-sizes`
  (max_batch_size); the best is `engine_tokens_per_s`.

Printed: the figures, then one JSON object (`fleet_to_engine`: fleet tokens/s over the engine's;
`fleet_to_langgraph`: tasks/s, ours over theirs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from benchmarks._common import cpu_seconds, cpu_spent, emit, percentile, ray_rss_gb
from benchmarks._fleet import chat_requests

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "bench-fleet"
SYSTEM = "Check the system with the tool first, then say in one short sentence that it is done."
CHECK_DESCRIPTION = "Checks the system; returns nothing."
TINY = "tiny"
INSTANT = "instant"


def start_instant_model() -> str:
    """Starts benchmarks/_instant_model.py in a process of its own (stopped when this one
    exits); returns its base URL once it answers."""
    import atexit
    import socket
    import subprocess

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks._instant_model", str(port)], cwd=ROOT)
    atexit.register(proc.terminate)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.post(f"{url}/chat/completions", json={"messages": []}).raise_for_status()
            return url
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the instant model did not start") from None
            time.sleep(0.1)


def task_inputs(n: int) -> list[str]:
    """One distinct question per task (no two prompts alike)."""
    return [f"Request {i}: is the system ready?" for i in range(n)]


def agent_params(model: str, max_tokens: int) -> dict[str, Any]:
    """The ToolAgent's params (the pool's agent.params): two model calls, one tool call."""
    return {
        "model": model,
        "tools": ["bench.check"],
        "system": SYSTEM,
        "first_tool_choice": "required",
        "tool_choice": "none",
        "parallel_tool_calls": False,
        "max_steps": 2,
        "max_tokens": max_tokens,
        "temperature": 0,
        # The agent's own patience for one call (its HTTP timeout, and the Retry-After waits
        # of a full queue within it): a call waits its turn behind a thousand others.
        "timeout_s": 1800,
    }


def system_config(args: argparse.Namespace, model: str, source: str, keys: str) -> dict[str, Any]:
    per_agent = -(-args.agents // args.pool_agents)  # ceil: every task runs at once
    # The model as `ai` with no models serves the default: colocated, with the product's
    # timeout_s (from admission into the batch) and max_queued_requests (beyond it, a 503 with
    # Retry-After, which the agents wait out).
    model_config: dict[str, Any] = {"source": source, "colocate": not args.no_colocate}
    engine = {"max_batch_size": args.served_batch_size, "torch_threads": args.served_torch_threads}
    if engine := {k: v for k, v in engine.items() if v}:
        model_config["engine"] = engine
    ai: dict[str, Any] = {"port": args.port, "auth": {"path": keys}, "models": {model: model_config}}
    if model == INSTANT:  # `source` is the endpoint's base URL
        ai["models"], ai["providers"] = {}, {model: {"base_url": source, "model": model}}
    return {
        "namespace": NAMESPACE,
        "ai": ai,
        "swarms": {
            "fleet": {
                "queen": {"max_queued_tasks": max(10_000, 2 * args.agents)},
                "pools": {
                    "agent": {
                        "colocate": True,
                        "min_agents": args.pool_agents,
                        "max_agents": args.pool_agents,
                        "agent": {
                            "class": "actors:ToolAgent",
                            "max_concurrent_tasks": per_agent,
                            "params": agent_params(model, args.max_tokens),
                            "capabilities": [{"name": "agent.run", "timeout_s": 1800}],
                        },
                    }
                },
            },
            "tools": {
                "pools": {
                    "check": {
                        "colocate": True,
                        "agent": {
                            "class": "benchmarks._agents:CheckAgent",
                            "max_concurrent_tasks": max(args.agents, 1),
                            "capabilities": [{"name": "bench.check", "description": CHECK_DESCRIPTION}],
                        },
                    }
                }
            },
        },
    }


def engine_counters(app: str) -> dict[str, Any]:
    """The served model's `ModelServer.counters`, through a Serve handle on the gateway."""
    from ray import serve

    async def ask() -> dict[str, Any]:
        return await serve.get_app_handle(app).engine_counters.remote()

    return next(iter(_HANDLE_LOOP.run_until_complete(ask()).values()))


# With the throughput-optimised data plane a Serve handle needs an event loop, and its router
# stays bound to the first one it ran on: one loop for every call.
_HANDLE_LOOP = asyncio.new_event_loop()


def served_figures(
    before: dict[str, Any], after: dict[str, Any], wall_s: float, prefix: str
) -> dict[str, Any]:
    """The served engine's work between two readings of its counters: requests, decode passes,
    the mean rows of a pass and the share of `wall_s` it had a request inside."""
    # Continuous batching counts a batch from empty to empty: its passes' rows tell how full it ran.
    steps = (after["steps"] or 0) - (before["steps"] or 0)
    rows = (after["row_steps"] or 0) - (before["row_steps"] or 0)
    return {
        f"{prefix}served_requests": after["requests"] - before["requests"],
        f"{prefix}served_steps": steps,
        f"{prefix}served_mean_batch": rows / steps if steps else None,
        # Prompt passes: fewer, larger ones when calls arrive together.
        f"{prefix}served_prefills": (after.get("prefills") or 0) - (before.get("prefills") or 0),
        f"{prefix}served_busy_share": (after["busy_s"] - before["busy_s"]) / wall_s,
        # Calls refused at once for a full queue (max_queued_requests) and asked again after
        # their Retry-After: the arm's calls beyond what the queue holds.
        f"{prefix}served_refused": after["refused"] - before["refused"],
        f"{prefix}served_torch_threads": after.get("torch_threads"),
    }


def cpu_figures(spent: dict[str, float], tasks: int, prefix: str) -> dict[str, Any]:
    """Where an arm's CPU went: seconds per task in all, and by process kind (the 8 largest)."""
    return {
        f"{prefix}cpu_s_per_task": sum(spent.values()) / tasks,
        f"{prefix}cpu_s_by_process": dict(list(spent.items())[:8]),
    }


def run_fleet(client: Any, inputs: list[str]) -> tuple[list[Any], float]:
    """Submits one task per input together; returns the results and the wall seconds."""
    queen = client.queen("fleet")
    t = time.perf_counter()
    ids = client.submit_many("agent.run", [{"input": text} for text in inputs], swarm="fleet")
    results = ray.get([queen.result.remote(task_id, None) for task_id in ids])
    return results, time.perf_counter() - t


async def run_langgraph(
    url: str,
    key: str,
    model: str,
    tool_spec: dict[str, Any],
    inputs: list[str],
    max_tokens: int,
    readings: Callable[[], Any],
) -> tuple[dict[str, Any], Any, Any]:
    """The same tasks through LangGraph's prebuilt ReAct agent, all at once on this loop;
    (figures, `readings()` after the warm-up, `readings()` at the end)."""
    try:
        import httpx
        from langchain_core.messages import ToolMessage
        from langchain_core.tools import StructuredTool
        from langchain_openai import ChatOpenAI
        from langgraph.prebuilt import create_react_agent
    except ImportError as e:
        raise SystemExit(
            f"{e}: the LangGraph peer needs the bench extra: pip install -e '.[bench]'"
        ) from None

    async def check() -> str:
        return "null"  # what our check's result (None) reads as a tool message

    function = tool_spec["function"]
    tool = StructuredTool.from_function(
        coroutine=check,
        name=function["name"],
        description=function["description"],
        args_schema=function["parameters"],
    )
    n = len(inputs)
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=1800) as http:
        llm = ChatOpenAI(
            model=model,
            base_url=url,
            api_key=key,
            max_tokens=max_tokens,
            temperature=0,
            # A full queue answers 503 with Retry-After, which the openai client waits out: as
            # many times as it takes, as our agents do within their timeout.
            max_retries=1000,
            http_async_client=http,
        )
        first = llm.bind_tools([tool], tool_choice="required", parallel_tool_calls=False)
        then = llm.bind_tools([tool], tool_choice="none", parallel_tool_calls=False)

        def pick(state: Any, runtime: Any) -> Any:  # per step: required, then none (as ours)
            return then if any(isinstance(m, ToolMessage) for m in state["messages"]) else first

        agent = create_react_agent(pick, [tool], prompt=SYSTEM)

        async def one(text: str) -> tuple[float, int, int, int]:
            t = time.perf_counter()
            out = await agent.ainvoke({"messages": [("user", text)]})
            ai = [m for m in out["messages"] if getattr(m, "usage_metadata", None)]
            tokens = sum(m.usage_metadata["output_tokens"] for m in ai)
            prompt = sum(m.usage_metadata["input_tokens"] for m in ai)
            return time.perf_counter() - t, tokens, len(ai), prompt

        await one("warm up")
        at_start = await asyncio.to_thread(readings)  # off this loop: the Serve handle runs its own
        t = time.perf_counter()
        done = await asyncio.gather(*(one(text) for text in inputs))
        wall = time.perf_counter() - t
        at_end = await asyncio.to_thread(readings)
    latencies = [d[0] for d in done]
    figures = {
        "langgraph_wall_s": wall,
        "langgraph_tasks_per_s": n / wall,
        "langgraph_tokens_per_s": sum(d[1] for d in done) / wall,
        "langgraph_task_p50_s": statistics.median(latencies),
        "langgraph_task_p99_s": percentile(latencies, 99),
        "langgraph_model_calls": sum(d[2] for d in done),
        "langgraph_prompt_tokens_per_task": sum(d[3] for d in done) / n,
    }
    return figures, at_start, at_end


async def replay(server: Any, payloads: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float]:
    """Every payload queued at once through `server`; (outputs, wall seconds)."""
    t = time.perf_counter()
    outs = await asyncio.gather(*(server.complete(p) for p in payloads))
    return list(outs), time.perf_counter() - t


def engine_baseline(
    model: str, source: str, bodies: list[dict[str, Any]], prompt_tokens: list[int], batch_sizes: list[int]
) -> dict[str, Any]:
    """The requests through the engine in this process at each batch size; the best one's
    tokens per second, and how many requests' prompts tokenized as the served ones did."""
    from models import EngineConfig
    from models._private.engines.factory import create_engine
    from serve._private.ai.deployments import ModelServer
    from serve._private.ai.protocol import ChatBody

    payloads = [ChatBody.model_validate(b).payload() for b in bodies]
    # Every request queued at once, as the baseline means: no bound on the engine's queue.
    server = ModelServer({"name": model, "source": source, "colocate": True, "max_queued_requests": None})
    asyncio.run(replay(server, payloads[:4]))  # warm
    by_size: dict[int, float] = {}
    same = 0
    for size in batch_sizes:
        server.engine = create_engine(source, EngineConfig(max_batch_size=size))
        outs, wall = asyncio.run(replay(server, payloads))
        by_size[size] = sum(o["completion_tokens"] for o in outs) / wall
        same = sum(o["prompt_tokens"] == p for o, p in zip(outs, prompt_tokens, strict=True))
        print(f"engine, max_batch_size {size}: {by_size[size]:.1f} tokens/s ({wall:.1f} s)", flush=True)
    best = max(by_size, key=by_size.__getitem__)
    import torch

    return {
        "engine_tokens_per_s": by_size[best],
        "engine_best_batch_size": best,
        "engine_tokens_per_s_by_batch": {str(k): round(v, 1) for k, v in by_size.items()},
        "engine_torch_threads": torch.get_num_threads(),
        "prompts_identical": same / len(bodies),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from actors._private.agents.tool_agent import function_tool
    from actors._private.services import AI_URL_KEY
    from cluster import Client, down, load_config, up
    from cluster._private.connection import HEAD_ENV
    from cluster._private.credentials import user_key
    from models import build_tiny_model
    from models._private.core import names
    from serve._private.ai.config import DEFAULT_MODEL, DEFAULT_MODEL_SOURCE

    if args.model == INSTANT:
        model, source = INSTANT, start_instant_model()
    elif args.model == TINY:
        # Its byte-level tokenizer has 512 tokens, so a prompt costs nearly a token a byte: a
        # second step (the tool call and its result written back) needs more than the 512
        # positions of the tests' tiny model.
        model, source = TINY, build_tiny_model(tempfile.mkdtemp(prefix="tiny-model-"), max_positions=2048)
    else:
        model, source = DEFAULT_MODEL, DEFAULT_MODEL_SOURCE
    for key, value in HEAD_ENV.items():  # what `swarm up` starts a local Ray with
        os.environ.setdefault(key, value)
    ray.init(
        namespace=NAMESPACE,
        logging_level="WARNING",
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    keys = tempfile.mkdtemp(prefix="bench-fleet-keys-")
    cfg = load_config(system_config(args, model, source, keys))
    inputs = task_inputs(args.agents)
    try:
        t = time.perf_counter()
        up(cfg)
        print(f"up in {time.perf_counter() - t:.1f} s", flush=True)
        client = Client(NAMESPACE)
        app = names.ai_app_name(NAMESPACE)
        warm, _ = run_fleet(client, [f"Warm-up {i}: is the system ready?" for i in range(8)])
        assert all(r.ok for r in warm), [r.error for r in warm if not r.ok][:2]

        def readings() -> tuple[dict[str, Any] | None, dict[int, tuple[str, float]]]:
            return (None if model == INSTANT else engine_counters(app)), cpu_seconds()

        fleet_start = readings()
        results, wall = run_fleet(client, inputs)
        fleet_end = readings()
        rss_gb = ray_rss_gb()
        failed = [r for r in results if not r.ok]
        assert not failed, f"{len(failed)} tasks failed: {[r.error for r in failed[:2]]}"
        (entry,) = client.capabilities("bench.check")
        # As the agents offered it (the schema without the payload model's title and docstring).
        schema = entry.get("schema") or {"type": "object"}
        tool_spec = function_tool("bench_check", entry["description"], schema)
        peer: dict[str, Any] = {}
        if not args.no_langgraph:
            url = ray.get(client.registry.kv_get.remote(AI_URL_KEY))
            peer, peer_start, peer_end = asyncio.run(
                run_langgraph(url, user_key(NAMESPACE), model, tool_spec, inputs, args.max_tokens, readings)
            )
            if model != INSTANT:
                peer |= served_figures(peer_start[0], peer_end[0], peer["langgraph_wall_s"], "langgraph_")
            peer |= cpu_figures(cpu_spent(peer_start[1], peer_end[1]), len(inputs), "langgraph_")
    finally:
        down(NAMESPACE)
        ray.shutdown()

    params = agent_params(model, args.max_tokens)
    bodies, prompt_tokens = [], []
    for text, r in zip(inputs, results, strict=True):
        bodies += chat_requests(params, [tool_spec], text, r.output)
        prompt_tokens += [int(s["usage"]["prompt_tokens"]) for s in r.output["steps"]]
    tasks_replayed = args.engine_tasks or args.agents
    cut = sum(len(r.output["steps"]) for r in results[:tasks_replayed])
    engine = (
        {}
        if model == INSTANT
        else engine_baseline(model, source, bodies[:cut], prompt_tokens[:cut], args.batch_sizes)
    )

    tokens = sum(r.output["usage"]["completion_tokens"] for r in results)
    latency = [r.timings.finished_at - r.timings.submitted_at for r in results]
    fleet_tasks_per_s = len(results) / wall
    out = {
        "model": model,
        "model_colocated": not args.no_colocate,
        "agents": args.agents,
        "pool_agents": args.pool_agents,
        "max_tokens": args.max_tokens,
        "fleet_tokens_per_s": tokens / wall,
        "prompt_tokens_per_task": sum(r.output["usage"]["prompt_tokens"] for r in results) / len(results),
        "fleet_tasks_per_s": fleet_tasks_per_s,
        "task_p50_s": statistics.median(latency),
        "task_p99_s": percentile(latency, 99),
        "rss_gb": rss_gb,
        "fleet_wall_s": wall,
        "model_calls": len(bodies),
        "model_calls_per_task": len(bodies) / len(results),
        **(served_figures(fleet_start[0], fleet_end[0], wall, "") if model != INSTANT else {}),
        **cpu_figures(cpu_spent(fleet_start[1], fleet_end[1]), len(results), ""),
        **peer,
    }
    if engine:
        out |= engine | {"engine_tasks_replayed": tasks_replayed}
        out["fleet_to_engine"] = out["fleet_tokens_per_s"] / engine["engine_tokens_per_s"]
    if peer:
        out["fleet_to_langgraph"] = fleet_tasks_per_s / peer["langgraph_tasks_per_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["default", TINY, INSTANT], default="default")
    parser.add_argument("--agents", type=int, default=1000, help="tasks submitted together (one per agent)")
    parser.add_argument("--pool-agents", type=int, default=10, help="ToolAgents in the colocated pool")
    parser.add_argument("--max-tokens", type=int, default=40, help="max_tokens of every model call")
    parser.add_argument(
        "--batch-sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[8, 16, 32, 64],
        help="engine max_batch_size values the baseline tries (comma-separated)",
    )
    parser.add_argument(
        "--engine-tasks", type=int, default=0, help="tasks whose requests the baseline replays (0: all)"
    )
    parser.add_argument(
        "--served-batch-size", type=int, default=0, help="the served engine's max_batch_size (0: its default)"
    )
    parser.add_argument(
        "--served-torch-threads", type=int, default=0, help="the served engine's torch threads (0: default)"
    )
    parser.add_argument(
        "--no-colocate",
        action="store_true",
        help="serve the model from a deployment of its own (colocate: false), not in the gateway",
    )
    parser.add_argument("--no-langgraph", action="store_true", help="skip the LangGraph peer")
    parser.add_argument("--port", type=int, default=8797)
    args = parser.parse_args()
    result = measure(args)
    r = result
    if "fleet_to_engine" in r:
        print(
            f"{r['agents']} agents, {r['model']}: fleet {r['fleet_tokens_per_s']:.1f} tokens/s, "
            f"engine {r['engine_tokens_per_s']:.1f} (batch {r['engine_best_batch_size']}), "
            f"ratio {r['fleet_to_engine']:.2f}; tasks p50 {r['task_p50_s']:.1f} s, "
            f"p99 {r['task_p99_s']:.1f} s; decode passes of {r['served_mean_batch']} rows on average",
            file=sys.stderr,
        )
    emit(result)


if __name__ == "__main__":
    main()
