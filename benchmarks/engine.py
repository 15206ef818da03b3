"""The transformers engine's decoding throughput against a hand-written `model.generate` loop and
against transformers' own continuous batching, on the workloads a fleet of agents makes.

In-process, no Ray, on CPU: the service's default model (SmolLM2-135M-Instruct, `--model
default`) or the tiny random-weight model (`--model tiny`). `--requests` chat requests (48),
greedy, their prompts 1 to 12 filler sentences long and their `max_tokens` drawn from
`--max-tokens` (16,32,64,96), seeded. Tokens counted are the completions' own (up to EOS or
their `max_tokens`), so every variant is credited the same work.

- raw: `model.generate` on the requests in submission order, in chunks of each of
  `--raw-batch-sizes` (left-padded, `max_new_tokens` the chunk's largest); the best size's
  tokens/s is the baseline every ratio divides by. It is what a hand-written batch loop gets,
  with no streaming, stop strings, grammars or cancellation.
- engine: `TransformersEngine` (`--batch-size` rows, the product's default, 32) on two
  workloads. all-at-once: every request submitted together. closed-loop: `--callers` (16)
  callers, each sending its next request when its previous one answers (what agents do).
- hf_cb: transformers' `ContinuousBatchingManager` (paged KV cache) on the same two workloads,
  `--batch-size` requests per step (`--no-hf-cb` leaves it out).

The last line is one JSON object: tokens/s of each and `<variant>_<workload>_to_raw` ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from benchmarks._common import emit, percentile
from models import EngineConfig, SamplingParams, build_tiny_model, create_engine
from serve._private.ai.config import DEFAULT_MODEL_SOURCE

_FILLER = [
    "The swarm splits the work between its agents.",
    "Each agent reads its notes before it answers.",
    "A queen hands out tasks and collects the results.",
    "Memory keeps what the swarm has learnt so far.",
]
_QUESTIONS = [
    "Summarise this in one sentence.",
    "List three things an agent should do next.",
    "Write a short plan for the task.",
    "Explain what the queen does.",
]


@dataclass
class Request:
    ids: list[int]
    prompt: str
    max_tokens: int


def workload(engine: Any, n: int, max_tokens: list[int], seed: int = 0) -> list[Request]:
    """`n` chat requests of varying prompt and completion lengths, the same for every variant."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        context = " ".join(rng.choice(_FILLER) for _ in range(rng.randint(1, 12)))
        text = f"{context} {_QUESTIONS[i % len(_QUESTIONS)]}"
        prompt = engine.chat_prompt([{"role": "user", "content": text}])
        out.append(Request(engine._encode(prompt, True), prompt, rng.choice(max_tokens)))
    return out


def useful_tokens(row: list[int], max_tokens: int, eos: set[int]) -> int:
    """Completion tokens of a generated row: up to its EOS (not counted, as the engine does not
    count it) or its own `max_tokens`."""
    for k, t in enumerate(row[:max_tokens]):
        if t in eos:
            return k
    return min(len(row), max_tokens)


def raw_generate(engine: Any, requests: list[Request], batch_size: int) -> float:
    """Tokens/s of `model.generate` over `requests` in chunks of `batch_size`."""
    import torch

    model, pad = engine.model, engine.pad_id
    tokens, start = 0, time.perf_counter()
    with torch.inference_mode():
        for at in range(0, len(requests), batch_size):
            chunk = requests[at : at + batch_size]
            width = max(len(r.ids) for r in chunk)
            ids = torch.tensor([[pad] * (width - len(r.ids)) + r.ids for r in chunk])
            mask = torch.tensor([[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in chunk])
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max(r.max_tokens for r in chunk),
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=sorted(engine.eos_ids),
            )
            for r, row in zip(chunk, out[:, width:].tolist(), strict=True):
                tokens += useful_tokens(row, r.max_tokens, engine.eos_ids)
    return tokens / (time.perf_counter() - start)


async def engine_all_at_once(engine: Any, requests: list[Request]) -> tuple[float, list[float]]:
    async def one(r: Request) -> tuple[int, float]:
        t = time.perf_counter()
        out = await engine.generate(
            r.prompt, SamplingParams(max_tokens=r.max_tokens, temperature=0), chat=True
        )
        return out.completion_tokens, time.perf_counter() - t

    start = time.perf_counter()
    done = await asyncio.gather(*(one(r) for r in requests))
    return sum(n for n, _ in done) / (time.perf_counter() - start), [s for _, s in done]


async def engine_closed_loop(engine: Any, requests: list[Request], callers: int) -> tuple[float, list[float]]:
    pending = iter(requests)
    tokens, latencies = 0, []

    async def caller() -> None:
        nonlocal tokens
        for r in pending:  # shared: each caller takes the next request when it is free
            t = time.perf_counter()
            params = SamplingParams(max_tokens=r.max_tokens, temperature=0)
            # Awaited first: `tokens += await ...` reads `tokens` before the await and loses
            # the other callers' additions made meanwhile.
            n = (await engine.generate(r.prompt, params, chat=True)).completion_tokens
            tokens += n
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return tokens / (time.perf_counter() - start), latencies


class HFContinuous:
    """transformers' continuous batching manager over the engine's model, for both workloads."""

    def __init__(self, engine: Any, requests: list[Request], batch_size: int):
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        self.eos = sorted(engine.eos_ids)
        longest = max(len(r.ids) + r.max_tokens for r in requests)
        page = 32
        # Sized here: on CPU the manager otherwise sizes its cache from free memory (gigabytes).
        blocks = batch_size * math.ceil(longest / page) + 8
        config = GenerationConfig(
            max_new_tokens=max(r.max_tokens for r in requests),
            do_sample=False,
            eos_token_id=self.eos,
            pad_token_id=engine.pad_id,
        )
        cb = ContinuousBatchingConfig(
            page_size=page, num_blocks=blocks, max_requests_per_batch=batch_size, max_batch_tokens=512
        )
        self.manager = engine.model.init_continuous_batching(
            generation_config=config, continuous_batching_config=cb
        )
        self.manager.start()
        self.counter = 0

    async def one(self, r: Request) -> int:
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()
        self.counter += 1
        rid = f"r{self.counter}"
        self.manager.register_result_handler(
            rid, lambda out: out.is_finished() and not done.done() and done.set_result(out)
        )
        self.manager.add_request(r.ids, request_id=rid, max_new_tokens=r.max_tokens, eos_token_id=self.eos)
        out = await done
        return useful_tokens(out.generated_tokens, r.max_tokens, set(self.eos))

    async def all_at_once(self, requests: list[Request]) -> float:
        start = time.perf_counter()
        tokens = sum(await asyncio.gather(*(self.one(r) for r in requests)))
        return tokens / (time.perf_counter() - start)

    async def closed_loop(self, requests: list[Request], callers: int) -> float:
        pending, tokens = iter(requests), 0

        async def caller() -> None:
            nonlocal tokens
            for r in pending:
                n = await self.one(r)  # awaited first, as in engine_closed_loop
                tokens += n

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return tokens / (time.perf_counter() - start)

    def stop(self) -> None:
        self.manager.stop(block=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["default", "tiny"], default="default")
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=EngineConfig().max_batch_size)
    parser.add_argument("--max-tokens", default="16,32,64,96", help="completion lengths drawn from")
    parser.add_argument("--raw-batch-sizes", default="8,16,32")
    parser.add_argument("--batching", default=None, help="the engine's `batching` (when it has one)")
    parser.add_argument("--no-hf-cb", action="store_true", help="leave transformers' manager out")
    args = parser.parse_args()

    import torch

    torch.manual_seed(0)
    source = DEFAULT_MODEL_SOURCE if args.model == "default" else build_tiny_model(tempfile.mkdtemp())
    extra = {"batching": args.batching} if args.batching else {}
    engine = create_engine(source, EngineConfig(max_batch_size=args.batch_size, **extra))
    requests = workload(engine, args.requests, [int(x) for x in args.max_tokens.split(",")])
    result: dict[str, Any] = {"model": args.model, "requests": args.requests, "callers": args.callers}
    result["batch_size"] = args.batch_size
    raw_generate(engine, requests[:2], 2)  # warm-up

    raw = {b: raw_generate(engine, requests, b) for b in [int(x) for x in args.raw_batch_sizes.split(",")]}
    best = max(raw, key=raw.get)
    result.update({f"raw_b{b}_tokens_per_s": v for b, v in raw.items()}, raw_best_batch_size=best)
    result["raw_tokens_per_s"] = raw[best]
    print(f"raw generate: {', '.join(f'b{b} {v:.1f}' for b, v in raw.items())} tokens/s", flush=True)

    async def engine_runs() -> None:
        await engine.generate("warm up", SamplingParams(max_tokens=4, temperature=0))
        batches = engine.batches
        rate, lat = await engine_all_at_once(engine, requests)
        result["engine_all_at_once_tokens_per_s"] = rate
        result["engine_all_at_once_latency_p50_s"] = percentile(lat, 50)
        rate, lat = await engine_closed_loop(engine, requests, args.callers)
        result["engine_closed_loop_tokens_per_s"] = rate
        result["engine_closed_loop_latency_p50_s"] = percentile(lat, 50)
        result["engine_closed_loop_latency_p99_s"] = percentile(lat, 99)
        result["engine_batches"] = engine.batches - batches

    asyncio.run(engine_runs())
    print(
        f"engine: {result['engine_all_at_once_tokens_per_s']:.1f} all at once, "
        f"{result['engine_closed_loop_tokens_per_s']:.1f} closed loop",
        flush=True,
    )

    if not args.no_hf_cb:

        async def hf_runs() -> None:
            hf = HFContinuous(engine, requests, args.batch_size)
            try:
                await hf.one(requests[0])  # warm-up
                result["hf_cb_all_at_once_tokens_per_s"] = await hf.all_at_once(requests)
                result["hf_cb_closed_loop_tokens_per_s"] = await hf.closed_loop(requests, args.callers)
            finally:
                hf.stop()

        asyncio.run(hf_runs())
        print(
            f"hf_cb: {result['hf_cb_all_at_once_tokens_per_s']:.1f} all at once, "
            f"{result['hf_cb_closed_loop_tokens_per_s']:.1f} closed loop",
            flush=True,
        )

    for key in [k for k in result if k.endswith("_tokens_per_s") and k.startswith(("engine_", "hf_cb_"))]:
        result[key.removesuffix("_tokens_per_s") + "_to_raw"] = result[key] / result["raw_tokens_per_s"]
    emit(result)


if __name__ == "__main__":
    main()
