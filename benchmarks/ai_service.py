"""What the AI service adds to a model call: the same tiny model called in-process through the
engine, then through Ray Serve over HTTP (proxy, gateway, model replica), in one run.

Latency is one request at a time (a short greedy completion); throughput keeps `--concurrency`
requests in flight. The overhead is the HTTP p50 minus the direct p50.
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
from models import EngineConfig, SamplingParams, build_tiny_model
from models._private.hf_engine import TransformersEngine
from serve import AIServiceConfig, deploy

PROMPT = "the quick brown fox"


async def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def throughput(fn, n: int, concurrency: int) -> float:
    left = iter(range(n))

    async def worker() -> None:
        for _ in left:
            await fn()

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - t)


async def measure(engine: TransformersEngine, url: str, args: argparse.Namespace) -> dict:
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0)
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": args.max_tokens, "temperature": 0}
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=url + "/", timeout=60, limits=limits) as http:

        async def direct() -> None:
            await engine.generate(PROMPT, params)

        async def over_http() -> None:
            r = await http.post("completions", json=body)
            r.raise_for_status()

        for fn in (direct, over_http):
            await timed(fn, 20)  # warm-up
        direct_ms, http_ms = await timed(direct, args.requests), await timed(over_http, args.requests)
        direct_rps = await throughput(direct, args.requests, args.concurrency)
        http_rps = await throughput(over_http, args.requests, args.concurrency)
    return {
        "direct_p50_ms": percentile(direct_ms, 50),
        "http_p50_ms": percentile(http_ms, 50),
        "overhead_p50_ms": percentile(http_ms, 50) - percentile(direct_ms, 50),
        "direct_p99_ms": percentile(direct_ms, 99),
        "http_p99_ms": percentile(http_ms, 99),
        "direct_rps": direct_rps,
        "http_rps": http_rps,
        "max_tokens": args.max_tokens,
        "concurrency": args.concurrency,
        "throughput_optimized": os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument(
        "--throughput-optimized",
        action="store_true",
        help="start Ray with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (Serve's gRPC data plane between replicas)",
    )
    args = parser.parse_args()
    if args.throughput_optimized:
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"  # read by the cluster ray.init starts

    path = build_tiny_model(tempfile.mkdtemp(prefix="tiny-model-"))
    engine = TransformersEngine(path, EngineConfig())
    ray.init(namespace="bench-ai", logging_level="WARNING", log_to_driver=False)
    config = AIServiceConfig(port=args.port, models={"tiny": {"source": path}}, embeddings=None)
    url = deploy(config, app_name="bench-ai")
    emit(asyncio.run(measure(engine, url, args)))


if __name__ == "__main__":
    main()
