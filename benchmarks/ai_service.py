"""What the AI service adds to a model call: the same model called in-process through the
engine, then through Ray Serve over HTTP (proxy, gateway, model replica), in one run.

Latency is one request at a time (a short greedy completion); throughput keeps `--concurrency`
requests in flight. The overhead is the HTTP p50 minus the direct p50. The model is a tiny
random-weight one built by the run, or with `--model default` the service's default
(SmolLM2-135M-Instruct). By default the service runs as `swarm up` runs it: the engine inside
the gateway replica (`colocate`), Serve's HAProxy ingress in front and its throughput-optimised
(gRPC) data plane between replicas (`cluster._private.connection.HEAD_ENV`). `--no-colocate`,
`--no-haproxy` and `--no-throughput-optimized` turn each off; `--plain-serve` all three (Ray
Serve as it comes). `listener` names the process that holds the port.
`auth_overhead_p50_ms` is what keys, limits and the audit add: the same requests to a second
deployment of the service with auth on, against the first's HTTP p50.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

import httpx
import ray

from benchmarks._common import emit, percentile
from cluster._private.connection import HEAD_ENV
from models import EngineConfig, SamplingParams, build_tiny_model
from models._private.engines.gguf_sources import dequantized, resolve_source
from models._private.engines.transformers_engine import TransformersEngine
from serve import AIServiceConfig, PriceConfig, deploy
from serve._private.ai.config import DEFAULT_MODEL, DEFAULT_MODEL_SOURCE
from serve._private.auth.authority import get_authority
from serve._private.auth.config import AuthConfig

PROMPT = "the quick brown fox"


async def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def throughput(fn, n: int, concurrency: int) -> tuple[float, float]:
    """(requests, completion tokens) per second with `concurrency` requests in flight; `fn`
    returns the completion tokens of its request."""
    left, tokens = iter(range(n)), 0

    async def worker() -> None:
        nonlocal tokens
        for _ in left:
            n = await fn()  # awaited first: `tokens += await fn()` reads `tokens` before it waits
            tokens += n

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t
    return n / elapsed, tokens / elapsed


async def measure(
    engine: TransformersEngine, url: str, model: str, args: argparse.Namespace, secure: tuple[str, str]
) -> dict:
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0)
    body = {"model": model, "prompt": PROMPT, "max_tokens": args.max_tokens, "temperature": 0}
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=url + "/", timeout=120, limits=limits) as http:

        async def direct() -> int:
            return (await engine.generate(PROMPT, params)).completion_tokens

        async def over_http() -> int:
            r = await http.post("completions", json=body)
            r.raise_for_status()
            return r.json()["usage"]["completion_tokens"]

        secure_url, key = secure

        async def with_auth() -> int:  # key, scope, limits (leases) and the audit record
            r = await http.post(
                secure_url + "/completions", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            r.raise_for_status()
            return r.json()["usage"]["completion_tokens"]

        for fn in (direct, over_http, with_auth):
            await timed(fn, 20)  # warm-up
        direct_ms, http_ms = await timed(direct, args.requests), await timed(over_http, args.requests)
        auth_ms = await timed(with_auth, args.requests)
        direct_rps, direct_tps = await throughput(direct, args.requests, args.concurrency)
        http_rps, http_tps = await throughput(over_http, args.requests, args.concurrency)
    return {
        "model": model,
        "direct_p50_ms": percentile(direct_ms, 50),
        "http_p50_ms": percentile(http_ms, 50),
        "overhead_p50_ms": percentile(http_ms, 50) - percentile(direct_ms, 50),
        "auth_http_p50_ms": percentile(auth_ms, 50),
        "auth_overhead_p50_ms": percentile(auth_ms, 50) - percentile(http_ms, 50),
        "direct_p99_ms": percentile(direct_ms, 99),
        "http_p99_ms": percentile(http_ms, 99),
        "direct_rps": direct_rps,
        "http_rps": http_rps,
        "http_to_direct_rps": http_rps / direct_rps,
        "tokens_per_s_direct": direct_tps,
        "tokens_per_s_http": http_tps,
        "max_tokens": args.max_tokens,
        "concurrency": args.concurrency,
        "colocate": args.colocate,
        "haproxy": args.haproxy,
        "throughput_optimized": os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1",
        "listener": listener(args.port),
    }


def listener(port: int) -> str:
    """The name of the process listening on `port`: which one answers HTTP."""
    import psutil  # a Ray dependency

    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid).name()
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument(
        "--no-throughput-optimized",
        action="store_true",
        help="Ray's default data plane between replicas, not RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (gRPC)",
    )
    parser.add_argument(
        "--no-colocate", action="store_true", help="the engine in a model deployment of its own"
    )
    parser.add_argument(
        "--no-haproxy", action="store_true", help="Serve's Python proxy actor, not its HAProxy ingress"
    )
    parser.add_argument(
        "--plain-serve", action="store_true", help="all three of the above: Ray Serve as it comes"
    )
    parser.add_argument("--model", choices=["tiny", "default"], default="tiny")
    args = parser.parse_args()
    args.colocate = not (args.no_colocate or args.plain_serve)
    args.haproxy = not (args.no_haproxy or args.plain_serve)
    args.throughput_optimized = not (args.no_throughput_optimized or args.plain_serve)
    # Read by the cluster that ray.init starts below: what `swarm up` starts a local Ray with,
    # less what the flags turn off.
    off = {"RAY_SERVE_ENABLE_HA_PROXY": not args.haproxy}
    off["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = not args.throughput_optimized
    for key, value in HEAD_ENV.items():
        if off.get(key):
            os.environ.pop(key, None)
        else:
            os.environ.setdefault(key, value)

    if args.model == "tiny":
        name, source = "tiny", build_tiny_model(tempfile.mkdtemp(prefix="tiny-model-"))
        path = source
    else:
        name, source = DEFAULT_MODEL, DEFAULT_MODEL_SOURCE
        path = dequantized(resolve_source(source))
    engine = TransformersEngine(path, EngineConfig())
    ray.init(namespace="bench-ai", logging_level="WARNING", log_to_driver=False)
    models = {name: {"source": source, "colocate": args.colocate}}
    config = AIServiceConfig(port=args.port, models=models, embeddings=None, auth={"enabled": False})
    url = deploy(config, app_name="bench-ai")
    # The same service again with auth on, the model priced, and a key whose limits are all set
    # (never reached).
    auth = AuthConfig(enabled=True, path=tempfile.mkdtemp(prefix="bench-auth-"))
    prices = {name: PriceConfig(input_usd_per_million_tokens=0.15, output_usd_per_million_tokens=0.6)}
    secure = config.model_copy(update={"route_prefix": "/secure", "auth": auth, "prices": prices})
    secure_url = deploy(secure, app_name="bench-ai-auth", system="bench-ai")
    limits = {
        "rpm": 10**6,
        "tpm": 10**9,
        "budget_tokens": 10**12,
        "budget_usd": 10**6,
        "budget_period_s": 86400.0,
    }
    made = get_authority("bench-ai", auth).create.remote({"name": "bench", "scopes": ["ai:invoke"], **limits})
    emit(asyncio.run(measure(engine, url, name, args, (secure_url, ray.get(made)["key"]))))


if __name__ == "__main__":
    main()
