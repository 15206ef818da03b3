"""Engines: the transformers engine on a tiny random-weight model built here, and vLLM's
argument mapping (real vLLM only in the `gpu`-marked test)."""

import asyncio
import dataclasses
import importlib.util
import json
import threading
import types

import pytest

from cluster import EngineError, EngineUnavailableError, RequestError
from models import EngineConfig, SamplingParams, create_engine
from models._private.engines.base import resolve_engine_kind
from models._private.engines.tiny_model import build_tiny_model
from models._private.engines.transformers_engine import TransformersEngine
from models._private.engines.vllm_engine import vllm_engine_args, vllm_sampling_args, vllm_sampling_params
from tests.waiting import async_wait_until

GREEDY = SamplingParams(max_tokens=12, temperature=0)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture
def engine(tiny_path):
    return TransformersEngine(tiny_path, EngineConfig(batch_wait_ms=50, max_batch_size=8))


def run(coro):
    return asyncio.run(coro)


async def collect(engine, prompt, params, **kw):
    return [d async for d in engine.stream(prompt, params, **kw)]


def test_auto_picks_transformers_without_a_gpu(tiny_path):
    assert resolve_engine_kind("auto") in {"transformers", "vllm"}
    if importlib.util.find_spec("vllm") is None:
        assert isinstance(create_engine(tiny_path, EngineConfig()), TransformersEngine)


def test_stream_concatenates_to_generate_and_counts_tokens(engine):
    prompt = engine.chat_prompt([{"role": "user", "content": "hello swarm"}])
    assert prompt.endswith("<|assistant|>\n") and "hello swarm" in prompt
    whole = run(engine.generate(prompt, GREEDY, chat=True))
    pieces = run(collect(engine, prompt, GREEDY, chat=True))
    assert "".join(d.text for d in pieces) == whole.text
    assert pieces[-1].finish_reason == whole.finish_reason
    assert (
        whole.prompt_tokens
        == engine.count_tokens(prompt, chat=True)
        == len(engine.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    )
    assert 1 <= whole.completion_tokens <= GREEDY.max_tokens
    if whole.finish_reason == "length":
        assert whole.completion_tokens == GREEDY.max_tokens


def test_a_whole_completion_wakes_its_caller_once_with_the_streams_text(engine):
    # A non-streaming call used to be sent each token's piece as it was decoded: a cross-thread
    # wake-up of the caller's loop per token per row, which slowed the decoding thread's passes
    # under a fleet's load (GIL hand-overs). It now gets the whole text once, the same text.
    params = SamplingParams(max_tokens=16, temperature=0)
    full = "".join(d.text for d in run(collect(engine, "hello", params)))
    cut_params = SamplingParams(max_tokens=16, temperature=0, stop=[full[5:7]])

    async def counted(call):
        loop = asyncio.get_running_loop()
        sent = []  # what the decoding thread hands the waiter (not the executor's hand-backs)
        send = loop.call_soon_threadsafe

        def counting(callback, *args):
            if getattr(callback, "__name__", "") == "put_nowait":
                sent.append(args)
            return send(callback, *args)

        loop.call_soon_threadsafe = counting
        try:
            return await call, len(sent)
        finally:
            del loop.call_soon_threadsafe

    (whole, woken), (cut, woken_cut) = (
        run(counted(engine.generate("hello", params))),
        run(counted(engine.generate("hello", cut_params))),
    )
    streamed_cut, woken_stream = run(counted(collect(engine, "hello", cut_params)))
    assert whole.text == full and whole.completion_tokens > 2
    assert cut.text == "".join(d.text for d in streamed_cut) and cut.finish_reason == "stop"
    assert woken == woken_cut == 2  # the whole text, then the end
    assert woken_stream == len(streamed_cut) + 1 > 2  # a stream still gets each piece


@pytest.mark.parametrize("wait_ms", [0, 50])
def test_concurrent_requests_share_forward_passes_and_match_solo_runs(tiny_path, wait_ms):
    engine = TransformersEngine(tiny_path, EngineConfig(batch_wait_ms=wait_ms))
    prompts = ["a", "the quick brown fox", "numbers 1 2 3", "swarm of agents shares work"]
    solo = [run(engine.generate(p, GREEDY)).text for p in prompts]
    before = engine.batches

    async def together():
        return await asyncio.gather(*(engine.generate(p, GREEDY) for p in prompts))

    batched = run(together())
    assert engine.batches - before == 1, "four requests queued together form one batch"
    assert [g.text for g in batched] == solo  # left padding and masks change nothing


def test_seeded_sampling_repeats_and_stop_strings_cut(engine):
    params = SamplingParams(max_tokens=16, temperature=1.0, seed=7)
    a, b = run(engine.generate("hello", params)), run(engine.generate("hello", params))
    assert a.text == b.text
    full = run(engine.generate("hello", SamplingParams(max_tokens=16, temperature=0))).text
    stop = full[3:5]
    assert stop
    cut = run(engine.generate("hello", SamplingParams(max_tokens=16, temperature=0, stop=[stop])))
    assert cut.text == full[: full.find(stop)] and cut.finish_reason == "stop"


def test_prompt_longer_than_the_model_allows_is_refused(tiny_path):
    small = TransformersEngine(tiny_path, EngineConfig(max_model_len=32))
    with pytest.raises(RequestError) as e:
        run(small.generate("word " * 40, GREEDY))
    assert e.value.code == "context_length_exceeded" and e.value.param == "prompt"
    assert "32 tokens" in str(e.value)


def test_health_check_fails_when_the_batch_loop_is_gone(engine):
    async def scenario():
        await engine.generate("hi", GREEDY)
        await engine.check_health()  # alive
        engine._worker.cancel()
        await asyncio.sleep(0)
        with pytest.raises(EngineError):
            await engine.check_health()
        with pytest.raises(EngineError):
            await engine.generate("hi", GREEDY)

    run(scenario())


def test_vllm_engine_arguments_map_from_config():
    config = EngineConfig(
        kind="vllm",
        dtype="bfloat16",
        max_model_len=4096,
        tensor_parallel_size=2,
        gpu_memory_utilization=0.8,
        vllm_args={"enable_prefix_caching": True},
    )
    assert vllm_engine_args("/models/llama", config) == {
        "model": "/models/llama",
        "tokenizer": "/models/llama",
        "dtype": "bfloat16",
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.8,
        "trust_remote_code": False,
        "distributed_executor_backend": "ray",
        "max_model_len": 4096,
        "enable_prefix_caching": True,
    }
    single = vllm_engine_args("m", EngineConfig(kind="vllm"))
    assert "distributed_executor_backend" not in single and "max_model_len" not in single
    with pytest.raises(ValueError, match="dtype"):
        vllm_engine_args("m", EngineConfig(vllm_args={"dtype": "float16"}))
    assert vllm_sampling_args(SamplingParams(max_tokens=5, temperature=0, stop=["\n"], seed=1)) == {
        "max_tokens": 5,
        "temperature": 0,
        "top_p": 1.0,
        "stop": ["\n"],
        "seed": 1,
    }


def test_a_json_schema_maps_to_vllms_structured_outputs():
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    args = vllm_sampling_args(SamplingParams(max_tokens=8, json_schema=schema))
    assert args["structured_outputs"] == {"json": schema, "disable_any_whitespace": True}
    assert "structured_outputs" not in vllm_sampling_args(SamplingParams())


# The two shapes vLLM's structured-output parameters have had (vllm/sampling_params.py), their
# fields as vLLM declares them, to check which keyword `vllm_sampling_params` picks without vLLM.
@dataclasses.dataclass
class _StructuredOutputsParams:  # vLLM >= 0.10.2
    json: str | dict | None = None
    regex: str | None = None
    disable_any_whitespace: bool = False
    whitespace_pattern: str | None = None


@dataclasses.dataclass
class _GuidedDecodingParams:  # vLLM 0.6.3 - 0.10.1
    json: str | dict | None = None
    regex: str | None = None
    backend: str | None = None
    whitespace_pattern: str | None = None


class _VSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


@pytest.mark.parametrize("recent", [True, False])
def test_vllm_sampling_params_use_the_structured_output_keyword_of_the_installed_vllm(recent):
    schema = {"type": "object"}
    module = types.SimpleNamespace(SamplingParams=_VSamplingParams)
    if recent:
        module.StructuredOutputsParams = _StructuredOutputsParams
    else:
        module.GuidedDecodingParams = _GuidedDecodingParams
    built = vllm_sampling_params(SamplingParams(max_tokens=8, temperature=0, json_schema=schema), module)
    if recent:
        assert built.kwargs.pop("structured_outputs") == _StructuredOutputsParams(
            json=schema, disable_any_whitespace=True
        )
    else:  # this one has no disable_any_whitespace: left out
        assert built.kwargs.pop("guided_decoding") == _GuidedDecodingParams(json=schema)
    assert built.kwargs == {"max_tokens": 8, "temperature": 0, "top_p": 1.0}
    plain = vllm_sampling_params(SamplingParams(max_tokens=8), module)
    assert plain.kwargs == {"max_tokens": 8, "temperature": 1.0, "top_p": 1.0}


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_choosing_vllm_without_it_is_a_clear_error(tiny_path):
    with pytest.raises(EngineUnavailableError, match=r"swarmray\[gpu\]"):
        create_engine(tiny_path, EngineConfig(kind="vllm"))


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or not _gpu(), reason="needs vLLM and a GPU")
def test_real_vllm_generates_on_a_gpu(tmp_path):
    # Head size 64 (256 / 4 heads): one that vLLM's attention kernels support.
    path = build_tiny_model(str(tmp_path), hidden=256)
    engine = create_engine(path, EngineConfig(kind="vllm", gpu_memory_utilization=0.2))
    out = run(engine.generate("hello", GREEDY))
    assert out.completion_tokens >= 1 and out.prompt_tokens == engine.count_tokens("hello")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    shaped = run(engine.generate("hello", SamplingParams(max_tokens=32, temperature=0, json_schema=schema)))
    assert shaped.finish_reason == "stop" and isinstance(json.loads(shaped.text)["n"], int)


def test_a_batch_wait_that_runs_out_ends_the_wait_on_python_3_10_too(tiny_path, monkeypatch):
    # Python 3.10's asyncio.wait_for raises asyncio.TimeoutError, which is not yet the builtin
    # TimeoutError (they are one class from 3.11): the engine must catch the asyncio one.
    class Py310Timeout(Exception):
        pass

    bounded = asyncio.wait_for  # the real one, to bound the test itself

    async def wait_for(aw, timeout):
        aw.close()
        raise Py310Timeout

    monkeypatch.setattr(asyncio, "TimeoutError", Py310Timeout)
    monkeypatch.setattr("models._private.engines.transformers_engine.asyncio.wait_for", wait_for)
    engine = TransformersEngine(tiny_path, EngineConfig(batch_wait_ms=50, max_batch_size=8))
    assert run(bounded(engine.generate("hello", GREEDY), 60)).completion_tokens >= 1


def test_a_request_the_dying_batch_loop_holds_fails_instead_of_waiting_for_ever(tiny_path, monkeypatch):
    bounded = asyncio.wait_for  # the real one, to bound the test itself

    async def broken_wait_for(aw, timeout):
        aw.close()
        raise RuntimeError("the loop breaks while it gathers a batch")

    monkeypatch.setattr("models._private.engines.transformers_engine.asyncio.wait_for", broken_wait_for)
    engine = TransformersEngine(tiny_path, EngineConfig(batch_wait_ms=50, max_batch_size=8))
    with pytest.raises(EngineError, match="the batch loop stopped"):
        run(bounded(engine.generate("hello", GREEDY), 60))


def test_each_token_is_detokenised_once_and_the_text_matches_a_whole_decode(engine, monkeypatch):
    # Decoding the whole output again at every token is quadratic in its length.
    params = SamplingParams(max_tokens=60, temperature=1.0, seed=3)  # noise: byte-level pieces
    ids = []
    real_advance = engine._advance

    def advance(r, token):
        ids.append(token)
        return real_advance(r, token)

    calls = []
    real_decode = engine.tokenizer.decode
    monkeypatch.setattr(engine.tokenizer, "decode", lambda *a, **k: calls.append(a) or real_decode(*a, **k))
    monkeypatch.setattr(engine, "_advance", advance)
    pieces = run(collect(engine, "hello", params))
    assert calls == []  # the stream decodes token by token (tokenizers' DecodeStream)
    text = "".join(d.text for d in pieces)
    kept = [t for t in ids if t not in engine.eos_ids]
    # The same text as one decode of every token, but for a character whose bytes the output
    # ended in the middle of: a whole decode shows it as U+FFFD, the stream leaves it out.
    assert text == real_decode(kept, skip_special_tokens=True).removesuffix("\ufffd") and len(kept) > 20


def test_without_max_tokens_a_completion_may_fill_the_context(tiny_path):
    small = TransformersEngine(tiny_path, EngineConfig(max_model_len=32))
    prompt = "the quick brown fox"
    out = run(small.generate(prompt, SamplingParams(max_tokens=None, temperature=0)))
    room = 32 - small.count_tokens(prompt)
    assert 1 <= out.completion_tokens <= room
    if out.finish_reason == "length":
        assert out.completion_tokens == room
    with pytest.raises(RequestError) as e:  # a prompt that fills the context leaves no room
        run(small.generate("word " * 40, SamplingParams(max_tokens=None)))
    assert e.value.code == "context_length_exceeded"


@pytest.mark.parametrize(("batching", "refill"), [("static", 0.0), ("static", 1.0), ("continuous", 0.0)])
def test_callers_answered_by_a_batch_who_come_back_one_by_one_share_the_next_batch(
    tiny_path, batching, refill
):
    # Over HTTP, the callers a batch answers send their next requests milliseconds apart, not
    # all at once as coroutines of one process do; with refill the next static batch waits for
    # them (up to its share of the last batch's ~100 ms here), and a continuous batch lets them
    # join the one the first of them started.
    config = EngineConfig(max_batch_size=8, batch_refill=refill, batching=batching)
    engine = TransformersEngine(tiny_path, config)
    prompts = ["a", "the quick brown fox", "numbers 1 2 3", "swarm of agents shares work"]
    params = SamplingParams(max_tokens=64, temperature=0)

    async def scenario() -> int:
        await asyncio.gather(*(engine.generate(p, params) for p in prompts))  # a batch of 4
        before, queued, put = engine.batches, [], engine._queue.put
        engine._queue.put = lambda r: queued.append(r) or put(r)
        first = asyncio.ensure_future(engine.generate(prompts[0], params))
        await async_wait_until(
            lambda: queued and engine._queue.qsize() == 0, what="the batch loop took the first caller"
        )
        await asyncio.gather(first, *(engine.generate(p, params) for p in prompts[1:]))
        return engine.batches - before

    assert run(scenario()) == (1 if refill or batching == "continuous" else 2)


def test_templating_and_tokenizing_run_off_the_event_loop(tiny_path, monkeypatch):
    # A prompt may be a million characters: rendering and tokenizing it on the replica's event
    # loop would stall every other request the replica holds.
    from serve._private.ai.config import ModelConfig
    from serve._private.ai.deployments import ModelServer

    config = ModelConfig(name="tiny", source=tiny_path, engine=EngineConfig(batch_wait_ms=5))
    server = ModelServer(config.model_dump())
    ran_on: dict[str, set[int]] = {"chat_prompt": set(), "_encode": set()}
    for name, threads in ran_on.items():
        real = getattr(server.engine, name)

        def recording(*args, _real=real, _threads=threads):
            _threads.add(threading.get_ident())
            return _real(*args)

        monkeypatch.setattr(server.engine, name, recording)
    request = {
        "messages": [{"role": "user", "content": "hello " * 400}],
        "params": GREEDY.model_dump(),
    }

    async def main():
        loop_thread = threading.get_ident()
        out = await server.complete(request)
        assert out["completion_tokens"] >= 1
        pieces = [p async for p in server.stream(request)]
        assert pieces and pieces[-1]["completion_tokens"] >= 1
        return loop_thread

    loop_thread = run(main())
    assert all(ran_on.values()) and not any(loop_thread in threads for threads in ran_on.values())


@pytest.mark.parametrize("params", [{"top_p": 5e-324}, {"temperature": 1e-300}, {"temperature": 1e-6}])
def test_vanishing_top_p_or_temperature_samples_the_top_token(engine, params):
    # Found by fuzzing: 5e-324 is 0 in float32, so top-p kept no token at all; 1e-300 made
    # the logits infinite. Like vLLM, a temperature under 1e-5 is greedy.
    sampled = run(engine.generate("hello", SamplingParams(max_tokens=8, seed=1, **params)))
    greedy = run(engine.generate("hello", GREEDY.model_copy(update={"max_tokens": 8})))
    assert sampled.completion_tokens >= 1 and sampled.text == greedy.text
