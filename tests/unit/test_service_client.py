"""How agents call the system's services (`ServiceClient`): a 503 with Retry-After, a model's
full queue, is asked again after that wait while it fits the client's timeout. A real HTTP
server on 127.0.0.1 (tests/scripted_provider.py)."""

import asyncio
import time

import pytest

from actors._private.services import AI_URL_KEY, ServiceClient

ASK = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
BUSY = (503, "the model 'm' is busy", {"Retry-After": "1"})


class _Registry:
    """What a client reads from the registry's KV store besides the URL it is given: the
    service key, which a system with auth off has none of."""

    async def kv_get(self, key):
        return None


class Context:
    tasks = _Registry()


def test_a_busy_service_is_asked_again_after_its_retry_after(provider):
    provider.script = [BUSY, BUSY, "ready"]
    client = ServiceClient(AI_URL_KEY, provider.url, timeout_s=30)
    t = time.perf_counter()
    answer = asyncio.run(client.post(Context(), "chat/completions", ASK))
    assert answer["choices"][0]["message"]["content"] == "ready"
    assert len(provider.requests) == 3 and time.perf_counter() - t >= 2  # one second, twice


def test_a_retry_after_past_the_clients_timeout_fails_at_once(provider):
    provider.script = [BUSY]
    client = ServiceClient(AI_URL_KEY, provider.url, timeout_s=0.5)
    t = time.perf_counter()
    with pytest.raises(RuntimeError, match="503"):
        asyncio.run(client.post(Context(), "chat/completions", ASK))
    assert len(provider.requests) == 1 and time.perf_counter() - t < 0.5


def test_a_503_without_retry_after_is_not_asked_again(provider):
    provider.script = [(503, "no shard"), "never"]
    client = ServiceClient(AI_URL_KEY, provider.url, timeout_s=30)
    with pytest.raises(RuntimeError, match="503"):
        asyncio.run(client.post(Context(), "chat/completions", ASK))
    assert len(provider.requests) == 1
