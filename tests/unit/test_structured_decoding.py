"""Structured output: JSON Schemas checked and compiled by llguidance (`grammar.py`), and the
transformers engine decoding the real default model (SmolLM2-135M-Instruct) under their token
masks, row by row inside a batch. Outputs are checked with the `jsonschema` package."""

import asyncio
import json
import time

import jsonschema
import pytest

from benchmarks.structured import TOOLS
from models import EngineConfig, SamplingParams, build_tiny_model, create_engine
from models._private.core.errors import RequestError
from models._private.engines import grammar
from models._private.engines.grammar import MAX_SCHEMA_CHARS, check_schema
from models._private.engines.tool_calls import named_tool_schema, required_tool_schema
from models._private.engines.transformers_engine import TransformersEngine
from serve._private.ai.config import DEFAULT_MODEL_SOURCE

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "height_m": {"type": "number"},
        "role": {"enum": ["admin", "user", "guest"]},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}, "zip": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "age", "role", "address"],
    "additionalProperties": False,
}
SCHEMAS = {
    "person": PERSON,
    "any_object": {"type": "object"},
    "required_tools": required_tool_schema(TOOLS),
    "one_required_tool": required_tool_schema(TOOLS, parallel=False),
    "named_tool": named_tool_schema(TOOLS, "get_weather"),
}
ASK = "Answer in JSON. Describe Alice, a 34 year old admin from Paris, or call a tool for the weather."


@pytest.fixture(scope="module")
def smol():
    engine = create_engine(DEFAULT_MODEL_SOURCE, EngineConfig(max_batch_size=8, batch_wait_ms=50))
    # Built by the first constrained request otherwise (0.4 s), while an unconstrained one that
    # came with it starts a batch alone.
    engine.token_grammars()
    return engine


def run(coro):
    return asyncio.run(coro)


def assert_matches(text: str, schema: dict) -> None:
    jsonschema.validate(json.loads(text), schema)


# -- check_schema: the gateway's check ----------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"type": "objekt"}, "Invalid type"),
        ({"$ref": "#/$defs/missing"}, "does not exist"),
        ({"type": "string", "pattern": "(a|b"}, "regex"),
        ({"type": "integer", "minimum": "zero"}, "minimum"),
        ([{"type": "object"}], "must be a JSON object"),
        ({"type": "number", "maximum": float("nan")}, "not JSON"),
    ],
)
def test_a_schema_that_is_not_valid_json_schema_is_a_400_naming_the_field(schema, reason):
    with pytest.raises(RequestError) as e:
        check_schema(schema, "response_format.json_schema.schema")
    assert e.value.param == "response_format.json_schema.schema" and reason in e.value.reason


def test_valid_schemas_pass_and_each_is_compiled_once():
    grammar._compiled.cache_clear()
    for schema in SCHEMAS.values():
        check_schema(schema, "p")
        check_schema(json.loads(json.dumps(schema)), "p")  # an equal schema: the same entry
    info = grammar._compiled.cache_info()
    assert (info.misses, info.hits) == (len(SCHEMAS), len(SCHEMAS))


def _doubling(levels: int) -> dict:
    """A schema whose JSON doubles with each level (each level holds the last one twice)."""
    s: dict = {"type": "string"}
    for _ in range(levels):
        s = {"type": "object", "properties": {"a": s, "b": {"type": "array", "items": s}}}
    return s


def _allof_of_anyofs(n: int) -> dict:
    """2**n alternatives once `allOf` is multiplied out, in under 3 kB of JSON."""
    return {
        "allOf": [
            {
                "anyOf": [
                    {"type": "object", "properties": {f"a{i}": {"type": "integer"}}},
                    {"type": "object", "properties": {f"b{i}": {"type": "string"}}},
                ]
            }
            for i in range(n)
        ]
    }


def _deep(levels: int) -> dict:
    s: dict = {"type": "string"}
    for _ in range(levels):
        s = {"type": "array", "items": s}
    return s


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        (_doubling(16), f"at most {MAX_SCHEMA_CHARS}"),  # 1.8 MB: building it would take seconds
        (_allof_of_anyofs(40), "schema too large"),  # 2**40 alternatives, 5.6 kB
        (_deep(100_000), "not JSON"),  # deeper than the recursion limit
        ({"enum": [f"value-{i}" for i in range(20_000)]}, f"at most {MAX_SCHEMA_CHARS}"),
    ],
)
def test_a_pathological_schema_is_refused_in_well_under_a_second(schema, reason):
    grammar._compiled.cache_clear()
    start = time.perf_counter()
    with pytest.raises(RequestError) as e:
        check_schema(schema, "tools.0.function.parameters")
    took = time.perf_counter() - start
    assert e.value.param == "tools.0.function.parameters" and reason in e.value.reason
    assert took < 0.5, f"refused after {took:.2f} s"


# -- the engine ---------------------------------------------------------------------------------


def test_every_constrained_output_parses_and_matches_in_a_batch_with_unconstrained_requests(smol):
    prompt = smol.chat_prompt([{"role": "user", "content": ASK}])
    requests = []
    for name, schema in SCHEMAS.items():
        requests.append((name, SamplingParams(max_tokens=120, temperature=0, json_schema=schema)))
        requests.append((name, SamplingParams(max_tokens=120, temperature=1, seed=11, json_schema=schema)))
    free = SamplingParams(max_tokens=40, temperature=0)

    async def batch(chunk):
        return await asyncio.gather(*(smol.generate(prompt, p, chat=True) for _, p in [*chunk, (None, free)]))

    for start in range(0, len(requests), 7):  # 7 constrained rows and one free one per batch
        chunk = requests[start : start + 7]
        before = smol.batches
        *outs, plain = run(batch(chunk))
        assert smol.batches - before == 1, "the requests shared one batch"
        for (name, params), out in zip(chunk, outs, strict=True):
            assert out.finish_reason == "stop", (name, out.text)
            assert_matches(out.text, params.json_schema)
        assert plain.text and plain.finish_reason in {"stop", "length"}


def test_masks_are_per_request_and_leave_unconstrained_rows_as_they_were(smol):
    prompt = smol.chat_prompt([{"role": "user", "content": "Give me a fruit and a number as JSON."}])
    fruit = {
        "type": "object",
        "properties": {"fruit": {"enum": ["apple", "pear"]}},
        "required": ["fruit"],
        "additionalProperties": False,
    }
    count = {
        "type": "object",
        "properties": {"count": {"type": "integer", "minimum": 0, "maximum": 1000}},
        "required": ["count"],
        "additionalProperties": False,
    }
    free = SamplingParams(max_tokens=24, temperature=0)
    solo = run(smol.generate(prompt, free, chat=True)).text

    async def together():
        return await asyncio.gather(
            smol.generate(prompt, SamplingParams(max_tokens=40, temperature=0, json_schema=fruit), chat=True),
            smol.generate(prompt, free, chat=True),
            smol.generate(prompt, SamplingParams(max_tokens=40, temperature=0, json_schema=count), chat=True),
        )

    before = smol.batches
    a, plain, b = run(together())
    assert smol.batches - before == 1
    assert a.finish_reason == b.finish_reason == "stop"
    assert json.loads(a.text)["fruit"] in {"apple", "pear"} and set(json.loads(a.text)) == {"fruit"}
    assert isinstance(json.loads(b.text)["count"], int) and set(json.loads(b.text)) == {"count"}
    assert plain.text == solo  # the unconstrained row decoded exactly as alone


def test_a_constrained_output_cut_by_max_tokens_finishes_with_length(smol):
    prompt = smol.chat_prompt([{"role": "user", "content": ASK}])
    out = run(
        smol.generate(prompt, SamplingParams(max_tokens=3, temperature=0, json_schema=PERSON), chat=True)
    )
    assert out.finish_reason == "length" and out.completion_tokens == 3
    assert out.text == '{"name":'  # the schema's first property, on the grammar's path


def test_the_engine_refuses_a_bad_schema_before_queueing_it(smol):
    before = smol.batches
    with pytest.raises(RequestError) as e:
        run(smol.generate("hi", SamplingParams(json_schema={"type": "objekt"})))
    assert e.value.param == "json_schema" and smol.batches == before


# -- chat templates and tools ---------------------------------------------------------------------

_TOOLS_TEMPLATE = (
    "{% if tools %}<|system|>\nTools: {% for t in tools %}{{ t['function']['name'] }} {% endfor %}<|end|>\n"
    "{% endif %}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def test_tools_go_through_a_template_that_renders_them_and_smollm2_says_it_cannot(smol, tmp_path):
    messages = [{"role": "user", "content": "weather in Paris?"}]
    assert smol.supports_tools is False
    assert smol.chat_prompt(messages, TOOLS) == smol.chat_prompt(messages)  # its template drops them

    tiny = TransformersEngine(build_tiny_model(str(tmp_path / "tiny")))
    assert tiny.supports_tools is False
    without = tiny.chat_prompt(messages)
    tiny.tokenizer.chat_template = _TOOLS_TEMPLATE
    del tiny.supports_tools  # a cached property: read the new template
    assert tiny.supports_tools is True
    assert tiny.chat_prompt(messages) == without  # tools=None: as before
    assert "Tools: get_weather search_notes" in tiny.chat_prompt(messages, TOOLS)


def test_the_bitmask_blocks_exactly_the_tokens_whose_bit_is_clear_in_the_rows_given(smol):
    import torch

    grammars = smol.token_grammars()
    words = (grammars.vocab_size + 31) // 32
    bitmask = torch.randint(
        -(2**31), 2**31 - 1, (3, words), dtype=torch.int32, generator=torch.Generator().manual_seed(5)
    )
    width = 32 * words + 7  # logits wider than the mask: the tail is never allowed
    logits = torch.randn(5, width)
    before = logits.clone()
    grammars.apply_bitmask(logits, bitmask, [4, 1, 2])
    token = torch.arange(32 * words)
    for k, row in enumerate([4, 1, 2]):
        allowed = (bitmask[k].long()[token // 32] >> (token % 32)) & 1 == 1
        assert torch.equal(logits[row, : 32 * words][allowed], before[row, : 32 * words][allowed])
        assert torch.isneginf(logits[row, : 32 * words][~allowed]).all()
        assert torch.isneginf(logits[row, 32 * words :]).all()
    assert torch.equal(logits[[0, 3]], before[[0, 3]])  # unconstrained rows untouched
