"""Continuous batching in the transformers engine: requests join a running batch at its next
step and leave it when they finish or are cancelled, and a row decodes the same tokens whether
it ran alone, joined a batch, or was joined. The tiny random-weight model, and the real default
model with real llguidance grammars."""

import asyncio
import json

import jsonschema
import pytest

from models import EngineConfig, SamplingParams, create_engine
from models._private.core.errors import RequestError
from models._private.engines.tiny_model import build_tiny_model
from models._private.engines.transformers_engine import TransformersEngine
from serve._private.ai.config import DEFAULT_MODEL_SOURCE
from tests.waiting import async_wait_until

LONG = SamplingParams(max_tokens=300, temperature=0)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny")))


def run(coro):
    return asyncio.run(coro)


def test_a_request_arriving_mid_batch_joins_it_answers_first_and_both_match_solo_runs(tiny_path):
    engine = TransformersEngine(tiny_path, EngineConfig(max_batch_size=4))
    long_prompt, short_prompt = "swarm of agents shares work", "numbers 1 2 3 and more numbers"
    short = SamplingParams(max_tokens=12, temperature=0)
    solo_long = run(engine.generate(long_prompt, LONG))
    solo_short = run(engine.generate(short_prompt, short)).text
    assert solo_long.completion_tokens == LONG.max_tokens  # long enough to be joined
    stop = solo_short[6:8]  # a stop string the joined row must still honour
    assert stop and solo_short.find(stop) > 0

    async def scenario():
        before, steps = (engine.batches, engine.joined), engine.steps
        first = asyncio.ensure_future(engine.generate(long_prompt, LONG))
        await async_wait_until(lambda: engine.steps >= steps + 5, what="the first request decoding")
        joined = await engine.generate(short_prompt, short)
        cut = await engine.generate(short_prompt, short.model_copy(update={"stop": [stop]}))
        assert not first.done(), "the joined requests answered while the first one still ran"
        return await first, joined, cut, (engine.batches - before[0], engine.joined - before[1])

    long_out, joined, cut, (batches, joins) = run(scenario())
    assert (batches, joins) == (1, 2), "both joined the running batch"
    assert joined.text == solo_short and long_out.text == solo_long.text
    assert cut.text == solo_short[: solo_short.find(stop)] and cut.finish_reason == "stop"


@pytest.mark.parametrize("why", ["static", "unmergeable"])
def test_static_batching_makes_a_late_request_wait_for_the_batch(tiny_path, why):
    engine = TransformersEngine(
        tiny_path, EngineConfig(max_batch_size=4, batching="static" if why == "static" else "continuous")
    )
    if why == "unmergeable":  # what a model with sliding-window or quantised cache layers is found to be
        engine._mergeable = False

    async def scenario():
        first = asyncio.ensure_future(engine.generate("swarm of agents shares work", LONG))
        await async_wait_until(lambda: engine.steps >= 5, what="the first request decoding")
        await engine.generate("hello", SamplingParams(max_tokens=4, temperature=0))
        return first.done()

    assert run(scenario()) and engine.batches == 2 and engine.joined == 0


def test_a_cancelled_row_leaves_the_batch(tiny_path):
    engine = TransformersEngine(tiny_path, EngineConfig(max_batch_size=4))
    assert run(engine.generate("hello there", LONG)).completion_tokens == LONG.max_tokens

    async def scenario():
        stays = asyncio.ensure_future(engine.generate("swarm of agents shares work", LONG))
        leaves = engine.stream("hello there", LONG)
        async for _ in leaves:  # its first piece: it is in the batch
            break
        await leaves.aclose()  # the client goes away
        await stays

    before = engine.row_steps
    run(scenario())
    # Had the cancelled row stayed, the batch would have decoded about 2 x 300 rows; the
    # cancellation is seen within a few steps, as the thread decodes while the loop closes it.
    assert LONG.max_tokens <= engine.row_steps - before < LONG.max_tokens + 100


def test_rows_joining_past_the_prefill_budget_come_in_over_later_steps(tiny_path):
    engine = TransformersEngine(tiny_path, EngineConfig(max_batch_size=8, prefill_tokens_per_step=8))
    prompts = ["the quick brown fox jumps", "numbers 1 2 3 4 5 6", "swarm of agents shares work"]
    params = SamplingParams(max_tokens=20, temperature=0)
    solo = [run(engine.generate(p, params)).text for p in prompts]
    before = engine.prefills

    async def together():
        return await asyncio.gather(*(engine.generate(p, params) for p in prompts))

    assert [g.text for g in run(together())] == solo
    assert engine.prefills - before == 3, "each prompt is over half the budget: one prefill each"


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "role": {"enum": ["admin", "user", "guest"]},
    },
    "required": ["name", "age", "role"],
    "additionalProperties": False,
}


def test_grammar_constrained_rows_joining_mid_batch_produce_valid_json():
    engine = create_engine(DEFAULT_MODEL_SOURCE, EngineConfig(max_batch_size=8))
    engine.token_grammars()
    story = engine.chat_prompt([{"role": "user", "content": "Write a long story about a fox in a forest."}])
    ask = engine.chat_prompt([{"role": "user", "content": "Describe Alice, a 34 year old admin, as JSON."}])
    free = SamplingParams(max_tokens=80, temperature=0)
    shaped = [
        SamplingParams(max_tokens=60, temperature=0, json_schema=SCHEMA),
        SamplingParams(max_tokens=60, temperature=1, seed=5, json_schema=SCHEMA),
        SamplingParams(max_tokens=60, temperature=0.7, seed=9, json_schema=SCHEMA),
    ]
    solo_free = run(engine.generate(story, free, chat=True))
    assert solo_free.completion_tokens == free.max_tokens
    solo_first = run(engine.generate(ask, shaped[0], chat=True)).text

    async def scenario():
        steps = engine.steps
        first = asyncio.ensure_future(engine.generate(story, free, chat=True))
        await async_wait_until(lambda: engine.steps >= steps + 2, what="the free request decoding")
        outs = await asyncio.gather(*(engine.generate(ask, p, chat=True) for p in shaped))
        return await first, outs

    before = (engine.batches, engine.joined)
    story_out, outs = run(scenario())
    assert (engine.batches - before[0], engine.joined - before[1]) == (1, 3)
    for params, out in zip(shaped, outs, strict=True):
        assert out.finish_reason == "stop", out.text
        jsonschema.validate(json.loads(out.text), params.json_schema)
    assert outs[0].text == solo_first and story_out.text == solo_free.text


def test_an_empty_prompt_is_refused_and_the_batch_it_would_join_decodes_on(tiny_path):
    """A prompt of no tokens has nothing to prefill: let into a running batch, its failed
    prefill used to fail every row of that batch with it."""
    engine = TransformersEngine(tiny_path, EngineConfig(max_batch_size=4))
    assert engine._encode("", False) == []  # the tiny tokenizer adds no start token
    solo = run(engine.generate("swarm of agents shares work", LONG))

    async def scenario():
        steps = engine.steps
        first = asyncio.ensure_future(engine.generate("swarm of agents shares work", LONG))
        await async_wait_until(lambda: engine.steps >= steps + 5, what="the first request decoding")
        with pytest.raises(RequestError, match="prompt has no tokens") as refused:
            await engine.generate("", SamplingParams(max_tokens=5, temperature=0))
        return refused.value, await first

    refused, first = run(scenario())
    assert refused.param == "prompt" and first.text == solo.text


@pytest.fixture(scope="module")
def tiny_hybrid_path(tmp_path_factory):
    """A tiny random-weight LFM2 (a convolution layer, then an attention layer) with the tiny
    model's tokenizer: its cache holds convolution states, whose rows cannot be dropped."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model(str(tmp_path_factory.mktemp("tiny-hybrid")))
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "lfm2",
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        layer_types=["conv", "full_attention"],
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return path


@pytest.mark.parametrize("batching", ["static", "continuous"])
def test_a_model_whose_cache_rows_cannot_be_dropped_finishes_every_row_of_a_batch(tiny_hybrid_path, batching):
    """Rows of one batch that end at different steps: a cache of convolution (or linear
    attention) states has no `batch_select_indices`, so a row that ends stays in it, padded
    and masked out, until the batch ends (as static batching always did)."""
    engine = TransformersEngine(tiny_hybrid_path, EngineConfig(max_batch_size=4, batching=batching))
    lengths = (3, 20, 9)

    async def together():
        return await asyncio.gather(
            *(
                engine.generate("swarm of agents", SamplingParams(max_tokens=n, temperature=0))
                for n in lengths
            )
        )

    outs = run(together())
    assert engine._mergeable is False and engine.batches == 1
    assert [o.completion_tokens for o in outs] == list(lengths)
    assert all(o.finish_reason == "length" for o in outs)


@pytest.mark.parametrize("model", ["tiny", "default"])
def test_requests_arriving_at_different_steps_each_decode_the_tokens_they_would_alone(tiny_path, model):
    """A mixed-arrival workload on three rows: requests join mid-batch (one with a prompt longer
    than the batch so far), rows end at different lengths (one at a stop string), one is
    cancelled, and the last ones wait for a free slot. Each answer is token for token the one
    the request gets alone."""
    source = DEFAULT_MODEL_SOURCE if model == "default" else tiny_path
    engine = create_engine(source, EngineConfig(max_batch_size=3))
    scale = 1 if model == "tiny" else 0.1  # SmolLM2 decodes about 30 tokens a second here
    tokens = lambda n: SamplingParams(max_tokens=max(3, int(n * scale)), temperature=0)  # noqa: E731
    long_prompt = " ".join(["The swarm splits the work between its agents; each reads its notes."] * 3)
    # (prompt, params, the steps the batch has decoded when it is sent)
    requests = [
        ("swarm of agents shares work", tokens(300), 0),
        ("hello", tokens(20), 2),
        (long_prompt, tokens(120), 4),
        ("numbers 1 2 3 and more numbers", tokens(80), 8),
        ("the quick brown fox jumps", tokens(60), 8),
        ("a queen hands out tasks", tokens(90), 8),
    ]
    solo = [run(engine.generate(p, params)).text for p, params, _ in requests]
    stop = next(s for k in range(1, len(solo[3])) if solo[3].find(s := solo[3][k : k + 2]) > 0)
    requests[3] = (requests[3][0], requests[3][1].model_copy(update={"stop": [stop]}), 8)
    solo[3] = solo[3][: solo[3].find(stop)]

    async def scenario():
        steps, joined = engine.steps, engine.joined
        sent = []
        for prompt, params, after in requests:
            await async_wait_until(lambda after=after: engine.steps >= steps + after, what=f"step {after}")
            sent.append(asyncio.ensure_future(engine.generate(prompt, params)))
            if after == 4:  # a caller that goes away after its first piece, in the same batch
                leaves = engine.stream("hello there", tokens(300))
                async for _ in leaves:
                    break
                await leaves.aclose()
        outs = await asyncio.gather(*sent)
        return outs, engine.joined - joined

    moved = engine.kv_stats.rows_moved
    outs, joined = run(scenario())
    assert [o.text for o in outs] == solo
    assert joined >= 4, "the later requests joined the running batch"
    assert engine.kv_stats.rows_moved > moved, "rows that ended made room without a new batch"
