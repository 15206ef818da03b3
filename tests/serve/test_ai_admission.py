"""A model's full queue over real HTTP: requests beyond `max_queued_requests` get a 503 at once,
with OpenAI's error body and a Retry-After header, while every request the model took is
answered in full; and a client that honours Retry-After (the official openai client) gets its
answer. Both paths: a model colocated in the gateway, and a model deployment of its own (Serve's
`max_queued_requests` on its handle). The tiny random-weight model, one row decoded at a time."""

import asyncio
import json
import time

import httpx
import openai
import pytest

from serve import AIServiceConfig, deploy

APP = "ai-admission-test"
MAX_TOKENS = 400  # about a second of the tiny model: the burst arrives while the first decode
BURST = 6


@pytest.fixture(scope="module")
def service(serve_port, tiny_model):
    one_at_a_time = {"source": tiny_model, "max_queued_requests": 1, "engine": {"max_batch_size": 1}}
    config = AIServiceConfig(
        auth={"enabled": False},
        port=serve_port,
        embeddings=None,
        models={
            "busy-colocated": {**one_at_a_time, "colocate": True},
            "busy-deployed": {**one_at_a_time, "max_ongoing_requests": 1},
        },
    )
    url = deploy(config, app_name=APP)
    yield url
    from ray import serve

    serve.delete(APP)


async def burst(url: str, model: str) -> tuple[float, dict, list[tuple[float, httpx.Response]]]:
    """A first request, streamed, then BURST - 1 at once while it decodes. Returns when the stream
    ended, its usage, and each other request's (time it came back, response), in perf_counter time.

    The burst waits for the stream's first token because Serve's router counts a request as
    queued until a replica takes it (its router.py says so): sent together, the first two can
    both count as queued and the second be refused where one decodes and one waits is meant."""
    body = {"model": model, "prompt": "the queue", "max_tokens": MAX_TOKENS, "temperature": 0}
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:

        async def one() -> tuple[float, httpx.Response]:
            response = await http.post("/completions", json=body)
            return time.perf_counter(), response

        await one()  # warm: the first decode of a replica is slow
        streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
        async with http.stream("POST", "/completions", json=streamed) as first:
            assert first.status_code == 200, await first.aread()
            lines = first.aiter_lines()
            async for line in lines:
                if line.startswith("data: "):
                    break  # a replica decodes the first request
            others = asyncio.gather(*(one() for _ in range(BURST - 1)))
            usage: dict = {}
            try:
                async for line in lines:
                    if line.startswith("data: {"):
                        usage = json.loads(line.removeprefix("data: ")).get("usage") or usage
            except BaseException:
                others.cancel()
                raise
            stream_ended = time.perf_counter()
            return stream_ended, usage, await others


@pytest.mark.parametrize("model", ["busy-colocated", "busy-deployed"])
def test_a_full_queue_answers_503_at_once_with_retry_after_and_serves_what_it_took(service, model):
    stream_ended, usage, outcomes = asyncio.run(burst(service, model))
    assert usage.get("completion_tokens") == MAX_TOKENS, usage
    served = [r for _, r in outcomes if r.status_code == 200]
    refused = [(t, r) for t, r in outcomes if r.status_code == 503]
    assert len(served) + len(refused) == BURST - 1, [r.text for _, r in outcomes]
    # The stream decodes and one waits; the rest are refused (more are served only if the
    # stream ended before the last requests arrived).
    assert served and refused, [r.status_code for _, r in outcomes]
    for r in served:  # every request taken is answered, in full
        assert r.json()["usage"]["completion_tokens"] == MAX_TOKENS
        assert r.headers["x-swarmray-backend"] == model
    for t, r in refused:
        assert t < stream_ended, "a refusal waited for an answer: it was not at once"
        assert int(r.headers["retry-after"]) >= 1
        error = r.json()["error"]
        assert (error["type"], error["code"], error["param"]) == (
            "service_unavailable",
            "model_overloaded",
            None,
        )
        assert model in error["message"] and "max_queued_requests" in error["message"]
    # Busy is not broken: the breaker stays closed.
    backends = httpx.get(f"{service}/backends", timeout=30).json()
    assert (backends[model]["breaker"], backends[model]["failures"]) == ("closed", 0)


def test_the_openai_client_retries_after_the_hint_and_every_request_is_answered(service):
    client = openai.AsyncOpenAI(base_url=service, api_key="unused", max_retries=8, timeout=120)

    async def all_of_them():
        async with client:
            return await asyncio.gather(
                *(
                    client.completions.create(
                        model="busy-colocated", prompt="the queue", max_tokens=MAX_TOKENS // 4, temperature=0
                    )
                    for _ in range(BURST)
                )
            )

    answers = asyncio.run(all_of_them())
    assert [a.usage.completion_tokens for a in answers] == [MAX_TOKENS // 4] * BURST
