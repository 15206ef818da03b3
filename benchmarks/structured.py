"""Structured output on the default model: how often a completion parses and matches its JSON
Schema with the grammar and without it, and what the grammar costs in decoding speed.

In-process, the transformers engine on SmolLM2-135M-Instruct (the service's default model),
batches of 8. (a) `--requests` requests (200) over strict schemas (nested objects, enums,
arrays, bounded numbers, a date pattern) and forced tool calls (`required_tool_schema`, with and
without parallel calls, and `named_tool_schema` from `tool_calls.py`); each prompt shows the
schema and asks for JSON only; sampled at temperature 0.7 with a seed per request. The SAME
requests run with `json_schema` (constrained) and without (unconstrained); a completion counts
as valid when `json.loads` reads the whole text and `jsonschema` validates it (`valid_inside`,
leniently: the first JSON value in the text validates, whatever prose or fence is around it).
(b) Decoding speed with a grammar ÷ without: the same 8 prompts, batch of 8, every row decoding
`--speed-tokens` tokens (the schema asks for a long string, so that no row stops early and both
runs take the same number of steps); the time is from the batch's first token to its last, so
the prompt's prefill is left out; median of `--speed-runs`, runs interleaved. (c) `agent_loop`:
the tool-using agent's own cost per step, from `benchmarks/agent_loop.py` when that module is
there (it starts Ray: run under the shared lock), unless `--no-agent-loop`. The last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import time
from typing import Any

import jsonschema

from benchmarks._common import emit
from models import EngineConfig, SamplingParams, create_engine
from models._private.engines.tool_calls import named_tool_schema, required_tool_schema
from serve._private.ai.config import DEFAULT_MODEL_SOURCE

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "role": {"enum": ["admin", "user", "guest"]},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 24},
                "country": {"type": "string", "maxLength": 24},
            },
            "required": ["city", "country"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "role", "address"],
    "additionalProperties": False,
}
ORDER = {
    "type": "object",
    "properties": {
        "item": {"enum": ["book", "lamp", "chair", "phone"]},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 100},
        "price_usd": {"type": "number", "minimum": 0, "maximum": 10000},
        "express": {"type": "boolean"},
    },
    "required": ["item", "quantity", "price_usd", "express"],
    "additionalProperties": False,
}
EVENT = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 40},
        "date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
        "attendees": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
    },
    "required": ["title", "date", "attendees"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 24},
                    "unit": {"enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_notes",
            "description": "Searches the notes.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "maxLength": 40},
                    "k": {"type": "integer", "minimum": 1, "maximum": 20},
                },
                "required": ["query", "k"],
                "additionalProperties": False,
            },
        },
    },
]
PEOPLE = [("Alice", 34, "Paris", "France"), ("Bob", 51, "Lima", "Peru"), ("Chen", 27, "Xi'an", "China")]
CITIES = ["Oslo", "Cairo", "Denver", "Kyoto", "Porto"]
TOOL_LIST = "; ".join(f"{t['function']['name']}: {t['function']['description']}" for t in TOOLS)


# (kind, schema, what the prompt asks: formatted with a person, a city and numbers per request)
KINDS: list[tuple[str, dict[str, Any], str]] = [
    ("person", PERSON, "Describe {name}, a {age} year old admin from {city}, {country}."),
    ("order", ORDER, "An order of {n} {item}s at {n}.50 dollars each, sent by express."),
    ("event", EVENT, "A meeting called 'Plan {city}' on 2027-03-{day:02d} with {name} and Dana."),
    (
        "tool_required",
        required_tool_schema(TOOLS, parallel=False),
        "Call one tool for the weather in {city} in celsius. Tools: " + TOOL_LIST,
    ),
    (
        "tool_required_parallel",
        required_tool_schema(TOOLS),
        "Call tools: the weather in {city}, and search the notes for '{name}'. Tools: " + TOOL_LIST,
    ),
    ("tool_named", named_tool_schema(TOOLS, "get_weather"), "The arguments of get_weather for {city}."),
]
ITEMS = ["book", "lamp", "chair", "phone"]


def build_requests(engine: Any, n: int) -> list[tuple[str, dict[str, Any], str]]:
    """`n` (kind, schema, chat prompt) requests, cycling through `KINDS` with varied details."""
    out = []
    for i in range(n):
        kind, schema, ask = KINDS[i % len(KINDS)]
        name, age, city, country = PEOPLE[i % len(PEOPLE)]
        task = ask.format(
            name=name,
            age=age + i % 7,
            city=CITIES[i % len(CITIES)] if kind != "person" else city,
            country=country,
            n=2 + i % 9,
            item=ITEMS[i % len(ITEMS)],
            day=1 + i % 28,
        )
        shown = json.dumps(schema, separators=(",", ":"))
        content = f"{task}\nReply with JSON only, matching this JSON Schema: {shown}"
        out.append((kind, schema, engine.chat_prompt([{"role": "user", "content": content}])))
    return out


def valid(text: str, schema: dict[str, Any]) -> bool:
    """Whether the whole of `text` is JSON that matches `schema`."""
    try:
        jsonschema.validate(json.loads(text), schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def valid_inside(text: str, schema: dict[str, Any]) -> bool:
    """Whether the first JSON value in `text` (after any prose or code fence) matches `schema`:
    what a lenient client that digs the JSON out would get."""
    starts = [at for at in (text.find("{"), text.find("[")) if at >= 0]
    if not starts:
        return False
    try:
        value, _ = json.JSONDecoder().raw_decode(text[min(starts) :])
        jsonschema.validate(value, schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


async def validity(engine: Any, requests: list, constrained: bool, max_tokens: int) -> dict[str, Any]:
    """Runs `requests` 8 at a time; the share of valid completions, overall and per kind."""
    per_kind: dict[str, list[bool]] = {}
    cut, tokens, inside = 0, 0, 0
    start = time.perf_counter()
    for at in range(0, len(requests), 8):
        chunk = requests[at : at + 8]
        outs = await asyncio.gather(
            *(
                engine.generate(
                    prompt,
                    SamplingParams(
                        max_tokens=max_tokens,
                        temperature=0.7,
                        seed=at + k,
                        json_schema=schema if constrained else None,
                    ),
                    chat=True,
                )
                for k, (_, schema, prompt) in enumerate(chunk)
            )
        )
        for (kind, schema, _), out in zip(chunk, outs, strict=True):
            per_kind.setdefault(kind, []).append(valid(out.text, schema))
            inside += valid_inside(out.text, schema)
            cut += out.finish_reason == "length"
            tokens += out.completion_tokens
    took = time.perf_counter() - start
    flat = [v for vs in per_kind.values() for v in vs]
    return {
        "valid_rate": sum(flat) / len(flat),
        "valid_inside_rate": inside / len(flat),
        "per_kind": {k: round(sum(vs) / len(vs), 3) for k, vs in per_kind.items()},
        "cut_by_max_tokens": cut,
        "tokens_per_s": tokens / took,
        "seconds": took,
    }


LONG = {
    "type": "object",
    "properties": {"story": {"type": "string", "minLength": 2000}},
    "required": ["story"],
    "additionalProperties": False,
}


async def decode_tokens_per_s(engine: Any, prompts: list[str], schema: dict | None, max_tokens: int) -> float:
    """Completion tokens a second of one batch of `prompts`, from its first token to its last
    (the prompt's prefill left out); every row must decode `max_tokens` tokens."""
    firsts: list[float] = []
    lasts: list[float] = []
    counts: list[int] = []

    async def one(i: int, prompt: str) -> None:
        params = SamplingParams(max_tokens=max_tokens, temperature=0.7, seed=i, json_schema=schema)
        first = True
        async for delta in engine.stream(prompt, params, chat=True):
            if first:
                firsts.append(time.perf_counter())
                first = False
            if delta.finish_reason:
                lasts.append(time.perf_counter())
                counts.append(delta.completion_tokens)
                assert delta.finish_reason == "length", "a row stopped early: the steps would differ"

    await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    return (sum(counts) - len(counts)) / (max(lasts) - min(firsts))


async def measure_engine(args: argparse.Namespace) -> dict[str, Any]:
    engine = create_engine(DEFAULT_MODEL_SOURCE, EngineConfig(max_batch_size=8, batch_wait_ms=20))
    started = time.perf_counter()
    engine.token_grammars()
    tokenizer_index_s = time.perf_counter() - started
    requests = build_requests(engine, args.requests)
    await engine.generate(requests[0][2], SamplingParams(max_tokens=4, json_schema=requests[0][1]), chat=True)

    constrained = await validity(engine, requests, True, args.max_tokens)
    print("constrained", json.dumps(constrained), flush=True)
    unconstrained = await validity(engine, requests, False, args.max_tokens)
    print("unconstrained", json.dumps(unconstrained), flush=True)

    ask = "Write a long story about a fox who learns to sail, as JSON with the key story."
    prompts = [
        engine.chat_prompt([{"role": "user", "content": f"{ask} The fox is called {name}."}])
        for name in ["Ada", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal"]
    ]
    await decode_tokens_per_s(engine, prompts, LONG, 8)  # warm both paths
    with_grammar, without = [], []
    for _ in range(args.speed_runs):  # interleaved, so that a noisy neighbour hits both alike
        without.append(await decode_tokens_per_s(engine, prompts, None, args.speed_tokens))
        with_grammar.append(await decode_tokens_per_s(engine, prompts, LONG, args.speed_tokens))
    return {
        "requests": args.requests,
        "constrained_valid_rate": constrained["valid_rate"],
        "unconstrained_valid_rate": unconstrained["valid_rate"],
        "unconstrained_valid_inside_rate": unconstrained["valid_inside_rate"],
        "constrained_per_kind": constrained["per_kind"],
        "unconstrained_per_kind": unconstrained["per_kind"],
        "constrained_cut_by_max_tokens": constrained["cut_by_max_tokens"],
        "unconstrained_cut_by_max_tokens": unconstrained["cut_by_max_tokens"],
        "decode_tokens_per_s_with_grammar": statistics.median(with_grammar),
        "decode_tokens_per_s_without": statistics.median(without),
        "grammar_speed_ratio": statistics.median(with_grammar) / statistics.median(without),
        "tokenizer_index_s": tokenizer_index_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=128, help="per completion in the validity runs")
    parser.add_argument("--speed-tokens", type=int, default=48, help="per row in the speed runs")
    parser.add_argument("--speed-runs", type=int, default=3)
    parser.add_argument(
        "--no-agent-loop", action="store_true", help="skip (c) even if agent_loop.py is there"
    )
    args = parser.parse_args()

    result = asyncio.run(measure_engine(args))
    print(
        f"valid: constrained {result['constrained_valid_rate']:.1%}, unconstrained "
        f"{result['unconstrained_valid_rate']:.1%}; decoding with a grammar / without: "
        f"{result['grammar_speed_ratio']:.3f}"
    )
    if not args.no_agent_loop and importlib.util.find_spec("benchmarks.agent_loop") is not None:
        from benchmarks import agent_loop  # another branch's (issue 27): the agent's own cost per step

        result["agent_loop"] = agent_loop.measure()
    emit(result)


if __name__ == "__main__":
    main()
