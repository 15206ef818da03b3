"""A served model's admission: a request that waits in its engine's queue behind others is not
a backend failure (the model's `timeout_s` counts from when the engine takes it into its batch),
a full queue refuses at once with a retry hint and no verdict on the backend, and a stalled
engine still fails over. The real AIServing with the tiny random-weight model colocated: its
real ModelServer and transformers engine, no Ray."""

import asyncio
import threading
import time

import pytest
from starlette.requests import Request

from models._private.core.errors import ModelOverloadedError
from models._private.engines.tiny_model import build_tiny_model
from serve._private.ai.protocol import CompletionBody
from serve._private.ai.serving import AIServing

MAX_TOKENS = 64  # about 0.1 s of the tiny model alone on a CPU here


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny")))


def serving(tiny_path: str, **primary) -> AIServing:
    """`tiny` (with `primary`'s settings) and its fallback `tiny-b`, both in this process."""
    models = {
        "tiny": {"source": tiny_path, "colocate": True, "fallbacks": ["tiny-b"], **primary},
        "tiny-b": {"source": tiny_path, "colocate": True},
    }
    service = AIServing({"models": models, "embeddings": None, "auth": {"enabled": False}}, {})
    service.usage.send = _kept  # the ledger is a Ray actor (the key authority): charges stay here
    return service


async def _kept() -> None:
    return None


def anonymous() -> Request:
    return Request({"type": "http", "method": "POST", "path": "/v1/completions", "headers": [], "state": {}})


async def complete(service: AIServing, prompt: str, max_tokens: int = MAX_TOKENS):
    body = CompletionBody(model="tiny", prompt=prompt, max_tokens=max_tokens, temperature=0)
    payload = {"prompt": body.prompt, "params": body.params(16)}
    return await service._answer(anonymous(), body, payload, chat=False)


def answered_by(service: AIServing, name: str) -> int:
    return service.backends[name].server.counters()["requests"]


def test_requests_that_wait_longer_than_timeout_s_behind_a_busy_engine_are_all_answered(tiny_path):
    # One row at a time: the last of 64 requests waits behind 63 others, seconds in all,
    # against a timeout_s of 2 s that each one's own decoding (0.1-0.3 s here) stays well within.
    service = serving(tiny_path, timeout_s=2, engine={"max_batch_size": 1})
    asyncio.run(complete(service, "warm up"))  # torch's first passes are slow

    async def one(i: int) -> tuple[float, str]:
        t = time.perf_counter()
        response = await complete(service, f"request {i}: is the system ready?")
        return time.perf_counter() - t, response.headers["x-swarmray-backend"]

    async def fleet():
        return await asyncio.gather(*(one(i) for i in range(64)))

    done = asyncio.run(fleet())
    waited = max(t for t, _ in done)
    assert waited > 4, f"the last request waited {waited:.2f} s: not past timeout_s, the test shows nothing"
    assert {backend for _, backend in done} == {"tiny"}, "a busy engine was failed over"
    assert (service.breakers["tiny"].state, service.breakers["tiny"].failures) == ("closed", 0)
    assert answered_by(service, "tiny-b") == 0


def test_by_default_a_fleets_calls_queue_and_none_is_refused(tiny_path):
    # A fleet sends more calls at once than any small bound: refusing them sends each back
    # through HTTP to retry, which cost 1,000 agents on the tiny model a third of their
    # throughput (benchmarks/README.md, fleet). By default the queue has no bound, as vLLM's.
    service = serving(tiny_path, engine={"max_batch_size": 8})

    async def fleet():
        return await asyncio.gather(*(complete(service, f"call {i}", max_tokens=1) for i in range(300)))

    answers = asyncio.run(fleet())
    assert len(answers) == 300 and all(a.headers["x-swarmray-backend"] == "tiny" for a in answers)
    assert service.backends["tiny"].server.counters()["refused"] == 0


def test_a_full_queue_refuses_at_once_with_a_retry_hint_and_serves_all_it_took(tiny_path):
    # One row decodes, two wait; of six sent together, three are refused before any answer.
    service = serving(tiny_path, max_queued_requests=2, engine={"max_batch_size": 1})

    async def one(i: int):
        try:
            response = await complete(service, f"request {i}: is the system ready?")
        except ModelOverloadedError as e:
            return e, service.backends["tiny"].server.counters()["requests"]
        return response.headers["x-swarmray-backend"], None

    async def burst():
        return await asyncio.gather(*(one(i) for i in range(6)))

    outcomes = asyncio.run(burst())
    refused = [(e, seen) for e, seen in outcomes if isinstance(e, ModelOverloadedError)]
    served = [backend for backend, _ in outcomes if not isinstance(backend, ModelOverloadedError)]
    assert len(refused) == 3 and served == ["tiny"] * 3  # each one it took is answered, by it
    for error, answers_before in refused:
        assert answers_before == 0, "a refusal waited for an answer: it was not at once"
        assert (error.model, error.max_queued) == ("tiny", 2)
        assert error.retry_after_s is not None and error.retry_after_s >= 1
    assert (service.breakers["tiny"].state, service.breakers["tiny"].failures) == ("closed", 0)
    assert answered_by(service, "tiny-b") == 0, "a full queue is not a failure to fall back from"


def test_an_engine_that_stalls_still_times_out_and_fails_over_both_the_admitted_and_the_queued(tiny_path):
    # One row: the first request is admitted and stalls; the second waits for the row (never
    # admitted) while the model answers no one: both fall back after timeout_s.
    service = serving(tiny_path, timeout_s=2, engine={"max_batch_size": 1})
    engine = service.backends["tiny"].server.engine
    asyncio.run(complete(service, "warm up"))  # the tokenizer and the batch loop run
    failures = service.breakers["tiny"].failures  # 0, unless the cold start took over 2 s
    stalled, released = threading.Event(), threading.Event()
    step = engine._step

    def stalling_step(batch):  # the decoding thread hangs (a deadlocked kernel, say)
        stalled.set()
        released.wait(30)
        step(batch)

    engine._step = stalling_step

    async def stalls():
        t = time.perf_counter()
        try:
            both = [complete(service, f"request {i}: is the system ready?") for i in range(2)]
            return await asyncio.gather(*both), time.perf_counter() - t
        finally:
            released.set()  # the decoding thread goes on (asyncio.run waits for it at the end)

    responses, took = asyncio.run(stalls())
    assert stalled.is_set()
    assert [r.headers["x-swarmray-backend"] for r in responses] == ["tiny-b", "tiny-b"]
    assert 2 <= took < 10  # timeout_s, then tiny-b's answers
    assert service.breakers["tiny"].failures == failures + 2
    assert service.backends["tiny"].server.admission.running == 0  # its row was let go
