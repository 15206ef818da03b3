"""The MCP federation's cost over a direct call: the same tools/call to the same upstream (the
example server over Streamable HTTP, in a subprocess on 127.0.0.1) made raw with the SDK's
`mcp.Client` and through the `Federation` (router, breaker, deadline, request-id memo, result
check, over its persistent upstream client), alternated call by call in one run. Also: the
cached tools listing (`catalog`, what a tools/list of federated tools reads) p99, how fast a
call to an upstream whose breaker is open fails, and 1,000 calls at once through the federation.

Printed: added p50 and p99 in ms (targets: 2 and 10; percentiles of the paired differences,
call i through the federation minus raw call i), the ratio of the federated p50 to the raw
one, and the other figures; the last line is one JSON object. `measure()` returns the same dict.
By default no Ray: the federation's logic runs in this process, as in its actor. With `--actor`,
also through the `McpFederation` actor on a local Ray (what an `McpToolAgent` calls): the same
alternation, from this driver, and 1,000 calls at once through it (`actor_*` figures).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

from mcp import Client

from actors._private.mcp.config import McpServerConfig
from actors._private.mcp.federation import DictPins, Federation
from actors._private.mcp.upstream import http_upstream
from benchmarks._common import emit, percentile
from benchmarks._mcp_example import free_port, start_example_server
from models._private.core.errors import McpDeadlineError, McpUpstreamError


async def _federation(url: str, **server: Any) -> Federation:
    cfg = McpServerConfig(url=url, prefix="mcp.ex", **server)
    fed = Federation({"ex": cfg}, {"ex": http_upstream("ex", url)}, DictPins())
    await fed.start()
    return fed


def _paired(through_ms: list[float], raw_ms: list[float]) -> tuple[float, float]:
    """The added latency's p50 and p99: percentiles of the paired differences (call i through
    the federation minus raw call i, made one after the other), not differences of percentiles,
    which compare the tails of two separate distributions."""
    differences = [t - r for t, r in zip(through_ms, raw_ms, strict=True)]
    return statistics.median(differences), percentile(differences, 99)


async def _measure(url: str, calls: int, concurrent: int) -> dict[str, Any]:
    arguments = {"text": "federated benchmark"}
    fed = await _federation(url)
    raw_ms, fed_ms = [], []
    try:
        async with Client(url) as raw:
            for _ in range(20):  # warm both paths
                await raw.call_tool("sha256", arguments)
                await fed.call("mcp.ex.sha256", arguments)
            for i in range(calls):
                t = time.perf_counter()
                answer = await raw.call_tool("sha256", arguments)
                raw_ms.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                federated = await fed.call("mcp.ex.sha256", arguments, request_id=f"bench-{i}")
                fed_ms.append((time.perf_counter() - t) * 1000)
                assert federated["structuredContent"] == answer.structured_content
        list_ms = []
        for _ in range(1000):
            t = time.perf_counter()
            entries = await fed.catalog()
            list_ms.append((time.perf_counter() - t) * 1000)
        assert len(entries) >= 4
        t = time.perf_counter()
        results = await asyncio.gather(
            *(fed.call("mcp.ex.sha256", {"text": str(i)}) for i in range(concurrent)), return_exceptions=True
        )
        concurrent_s = time.perf_counter() - t
        errors = sum(isinstance(r, BaseException) or r.get("isError") for r in results)
    finally:
        await fed.close()

    # A breaker opened by a call past its deadline; then calls fail without reaching the upstream.
    fed = await _federation(url, breaker={"failure_threshold": 1, "cooldown_s": 600})
    try:
        try:
            await fed.call("mcp.ex.sleep", {"seconds": 5}, deadline_s=0.05)
        except McpDeadlineError:
            pass
        open_ms = []
        for _ in range(1000):
            t = time.perf_counter()
            try:
                await fed.call("mcp.ex.sha256", arguments)
                raise AssertionError("a call went through an open breaker")
            except McpUpstreamError:
                open_ms.append((time.perf_counter() - t) * 1000)
    finally:
        await fed.close()

    raw_p50, fed_p50 = statistics.median(raw_ms), statistics.median(fed_ms)
    added = _paired(fed_ms, raw_ms)
    return {
        "added_p50_ms": added[0],
        "added_p99_ms": added[1],
        "p99_difference_ms": percentile(fed_ms, 99) - percentile(raw_ms, 99),
        "ratio": fed_p50 / raw_p50,
        "federated_p50_ms": fed_p50,
        "federated_p99_ms": percentile(fed_ms, 99),
        "raw_p50_ms": raw_p50,
        "raw_p99_ms": percentile(raw_ms, 99),
        "cached_list_p99_ms": percentile(list_ms, 99),
        "breaker_open_fail_p99_ms": percentile(open_ms, 99),
        "concurrent_calls": concurrent,
        "concurrent_errors": errors,
        "concurrent_s": concurrent_s,
        "calls": calls,
    }


async def _measure_actor(url: str, calls: int, concurrent: int) -> dict[str, Any]:
    import ray

    from actors._private.config import RegistryConfig
    from actors._private.mcp.config import McpFederationConfig
    from actors._private.mcp.service import start_federation, stop_federation
    from actors._private.registry import MetaRegistry
    from models._private.core import names

    namespace = "bench-mcp"
    ray.init(namespace=namespace, num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        registry = ray.remote(MetaRegistry).options(name=names.REGISTRY, num_cpus=0).remote(RegistryConfig())
        await registry.kv_keys.remote()
        servers = {"ex": McpServerConfig(url=url, prefix="mcp.ex")}
        federation = start_federation(servers, McpFederationConfig(), namespace)
        await federation.ready.remote()
        arguments = {"text": "federated benchmark"}
        raw_ms, actor_ms = [], []
        async with Client(url) as raw:
            for _ in range(20):
                await raw.call_tool("sha256", arguments)
                await federation.call.remote("mcp.ex.sha256", arguments)
            for i in range(calls):
                t = time.perf_counter()
                await raw.call_tool("sha256", arguments)
                raw_ms.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                await federation.call.remote("mcp.ex.sha256", arguments, None, f"bench-{i}")
                actor_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        results = await asyncio.gather(
            *(federation.call.remote("mcp.ex.sha256", {"text": str(i)}) for i in range(concurrent)),
            return_exceptions=True,
        )
        concurrent_s = time.perf_counter() - t
        errors = sum(isinstance(r, BaseException) or r.get("isError") for r in results)
        stop_federation(list(servers), namespace)
    finally:
        ray.shutdown()
    raw_p50, actor_p50 = statistics.median(raw_ms), statistics.median(actor_ms)
    added = _paired(actor_ms, raw_ms)
    return {
        "actor_added_p50_ms": added[0],
        "actor_added_p99_ms": added[1],
        "actor_ratio": actor_p50 / raw_p50,
        "actor_p50_ms": actor_p50,
        "actor_p99_ms": percentile(actor_ms, 99),
        "actor_raw_p50_ms": raw_p50,
        "actor_concurrent_errors": errors,
        "actor_concurrent_s": concurrent_s,
    }


def _measure_system(url: str, calls: int) -> dict[str, Any]:
    """On a system brought up by `up` (a local Ray, Serve on a free port) federating the example
    server: tools/list over the system's own /mcp endpoint (its cached listing), and the same
    federated tool called as a task through the queen (the swarm path) vs raw, alternated."""
    import tempfile

    import ray
    from ray import serve

    from actors._private.services import MCP_URL_KEY
    from cluster import Client as SwarmClient
    from cluster import down, load_config, up
    from cluster._private.connection import HEAD_ENV, call, registry_of
    from cluster._private.credentials import user_key
    from models._private.core.names import bearer

    namespace = "bench-mcp-system"
    for key, value in HEAD_ENV.items():  # the HAProxy ingress and data plane `swarm up` runs with
        os.environ.setdefault(key, value)
    ray.init(namespace=namespace, logging_level="WARNING", log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    keys = tempfile.mkdtemp(prefix="bench-mcp-keys-")
    config = load_config(
        {
            "namespace": namespace,
            "swarms": {"front": {"pools": {"text": {"agent": {"class": "actors:TextStatsAgent"}}}}},
            "mcp": {
                "server": {"port": port, "auth": {"path": keys}},
                "servers": {"ex": {"url": url}},
                "federation": {"agents": 1},
            },
        }
    )
    up(config)
    try:
        client = SwarmClient(namespace)
        arguments = {"text": "federated benchmark"}

        async def listing_and_raw() -> tuple[list[float], list[float], list[float], int]:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            endpoint = call(lambda: registry_of(namespace).kv_get.remote(MCP_URL_KEY))
            list_ms, raw_ms, queen_ms = [], [], []
            async with (
                httpx2.AsyncClient(headers=bearer(user_key(namespace)), timeout=30) as http,
                # No client-side cache: each tools/list reaches the endpoint.
                Client(streamable_http_client(endpoint, http_client=http), cache=None) as ours,
                Client(url) as raw,
            ):
                for _ in range(20):
                    await ours.list_tools()
                for _ in range(calls):
                    t = time.perf_counter()
                    listed = await ours.list_tools()
                    list_ms.append((time.perf_counter() - t) * 1000)
                for _ in range(5):
                    await raw.call_tool("sha256", arguments)
                    await asyncio.to_thread(lambda: client.result(client.submit("mcp.ex.sha256", arguments)))
                for _ in range(calls):
                    t = time.perf_counter()
                    await raw.call_tool("sha256", arguments)
                    raw_ms.append((time.perf_counter() - t) * 1000)
                    t = time.perf_counter()
                    result = await asyncio.to_thread(
                        lambda: client.result(client.submit("mcp.ex.sha256", arguments))
                    )
                    queen_ms.append((time.perf_counter() - t) * 1000)
                    assert result.ok, result.error
            return list_ms, raw_ms, queen_ms, len(listed.tools)

        list_ms, raw_ms, queen_ms, listed = asyncio.run(listing_and_raw())
    finally:
        down(namespace)
        ray.shutdown()
    added = _paired(queen_ms, raw_ms)
    return {
        "endpoint_list_p50_ms": statistics.median(list_ms),
        "endpoint_list_p99_ms": percentile(list_ms, 99),
        "endpoint_tools_listed": listed,
        "queen_p50_ms": statistics.median(queen_ms),
        "queen_p99_ms": percentile(queen_ms, 99),
        "queen_raw_p50_ms": statistics.median(raw_ms),
        "queen_added_p50_ms": added[0],
        "queen_added_p99_ms": added[1],
    }


def measure(
    calls: int = 500, concurrent: int = 1000, actor: bool = False, system: bool = False
) -> dict[str, Any]:
    """Runs against a new example server and returns {"added_p50_ms", "added_p99_ms", "ratio",
    "federated_p50_ms", "federated_p99_ms", "raw_p50_ms", "raw_p99_ms", "cached_list_p99_ms",
    "breaker_open_fail_p99_ms", "concurrent_calls", "concurrent_errors", "concurrent_s", "calls"}."""
    proc, url = start_example_server()
    try:
        result = asyncio.run(_measure(url, calls, concurrent))
        if actor:
            result.update(asyncio.run(_measure_actor(url, calls, concurrent)))
        if system:
            result.update(_measure_system(url, min(calls, 200)))
        return result
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--calls", type=int, default=500, help="calls of each kind, alternated, one at a time"
    )
    parser.add_argument(
        "--concurrent", type=int, default=1000, help="calls sent at once through the federation"
    )
    parser.add_argument(
        "--actor", action="store_true", help="also through the federation actor on a local Ray"
    )
    parser.add_argument(
        "--system",
        action="store_true",
        help="also on a system `up` brings up: tools/list over its /mcp endpoint, and the tool as a "
        "task through the queen vs raw (at most 200 calls each)",
    )
    args = parser.parse_args()
    r = measure(args.calls, args.concurrent, args.actor, args.system)
    print(
        f"tools/call: raw {r['raw_p50_ms']:.2f} ms p50 / {r['raw_p99_ms']:.2f} p99, federated "
        f"{r['federated_p50_ms']:.2f} / {r['federated_p99_ms']:.2f}: added {r['added_p50_ms']:.2f} ms p50 "
        f"(target 2), {r['added_p99_ms']:.2f} ms p99 (target 10), ratio {r['ratio']:.2f}; cached tools list "
        f"p99 {r['cached_list_p99_ms']:.3f} ms (target 5); open breaker fails in "
        f"{r['breaker_open_fail_p99_ms']:.3f} ms p99 (target 1); {r['concurrent_calls']} calls at once: "
        f"{r['concurrent_errors']} errors in {r['concurrent_s']:.2f} s"
    )
    if args.actor:
        print(
            f"through the actor: {r['actor_p50_ms']:.2f} ms p50 / {r['actor_p99_ms']:.2f} p99 vs raw "
            f"{r['actor_raw_p50_ms']:.2f}: added {r['actor_added_p50_ms']:.2f} ms p50, "
            f"{r['actor_added_p99_ms']:.2f} ms p99, ratio {r['actor_ratio']:.2f}; {args.concurrent} calls at "
            f"once: {r['actor_concurrent_errors']} errors in {r['actor_concurrent_s']:.2f} s"
        )
    if args.system:
        print(
            f"on a system: tools/list over /mcp ({r['endpoint_tools_listed']} tools) "
            f"{r['endpoint_list_p50_ms']:.2f} ms p50 / {r['endpoint_list_p99_ms']:.2f} p99 (target 5); "
            f"the tool as a task through the queen {r['queen_p50_ms']:.2f} ms p50 / "
            f"{r['queen_p99_ms']:.2f} p99 "
            f"vs raw {r['queen_raw_p50_ms']:.2f}: added {r['queen_added_p50_ms']:.2f} ms p50, "
            f"{r['queen_added_p99_ms']:.2f} ms p99"
        )
    emit(r)


if __name__ == "__main__":
    main()
