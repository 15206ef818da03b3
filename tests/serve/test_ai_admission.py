"""A model's full queue over real HTTP: requests beyond `max_queued_requests` get a 503 at once,
with OpenAI's error body and a Retry-After header, while every request the model took is
answered in full; and a client that honours Retry-After (the official openai client) gets its
answer. Both paths: a model colocated in the gateway, and a model deployment of its own (Serve's
`max_queued_requests` on its handle). The tiny random-weight model, one row decoded at a time."""

import asyncio
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


async def burst(url: str, model: str) -> list[tuple[float, httpx.Response]]:
    body = {"model": model, "prompt": "the queue", "max_tokens": MAX_TOKENS, "temperature": 0}
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:

        async def one() -> tuple[float, httpx.Response]:
            t = time.perf_counter()
            response = await http.post("/completions", json=body)
            return time.perf_counter() - t, response

        await one()  # warm: the first decode of a replica is slow
        return await asyncio.gather(*(one() for _ in range(BURST)))


@pytest.mark.parametrize("model", ["busy-colocated", "busy-deployed"])
def test_a_full_queue_answers_503_at_once_with_retry_after_and_serves_what_it_took(service, model):
    outcomes = asyncio.run(burst(service, model))
    served = [(t, r) for t, r in outcomes if r.status_code == 200]
    refused = [(t, r) for t, r in outcomes if r.status_code == 503]
    assert len(served) + len(refused) == BURST, [r.text for _, r in outcomes]
    # One decodes and one waits; the rest are refused (more are served only if the first
    # answers came back before the last requests arrived).
    assert len(served) >= 2 and refused, [r.status_code for _, r in outcomes]
    for _, r in served:  # every request taken is answered, in full
        assert r.json()["usage"]["completion_tokens"] == MAX_TOKENS
        assert r.headers["x-swarmray-backend"] == model
    first_answer = min(t for t, _ in served)
    for t, r in refused:
        assert t < first_answer, "a refusal waited for an answer: it was not at once"
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
