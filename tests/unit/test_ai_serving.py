"""The AI service's serving logic in-process, without Ray: the real AIServing with real remote
backends (httpx) talking to fake providers, small ASGI apps behind httpx's ASGI transport."""

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from models._private.core.errors import BackendsUnavailableError
from serve._private.ai.protocol import CompletionBody
from serve._private.ai.serving import AIServing
from serve._private.auth.keys import KeyRecord


class FakeProvider:
    """An OpenAI-compatible provider that answers /completions (or fails with `status`) and
    counts the calls it got."""

    def __init__(self, status: int = 200):
        self.status, self.calls = status, 0

    async def completions(self, request: Request) -> JSONResponse:
        self.calls += 1
        if self.status != 200:
            return JSONResponse({"error": {"message": "down"}}, status_code=self.status)
        usage = {"prompt_tokens": 3, "completion_tokens": 2}
        return JSONResponse({"choices": [{"text": "ok", "finish_reason": "stop"}], "usage": usage})

    def client(self) -> httpx.AsyncClient:
        app = Starlette(routes=[Route("/v1/completions", self.completions, methods=["POST"])])
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://provider/v1/")


def serving(providers: dict[str, FakeProvider], fallbacks: dict[str, list[str]]) -> AIServing:
    config = {
        "models": {},
        "providers": {
            name: {"base_url": "http://provider/v1", "model": name, "fallbacks": fallbacks.get(name, [])}
            for name in providers
        },
        "auth": {"enabled": False},
    }
    service = AIServing(config, {})
    for name, provider in providers.items():
        service.backends[name].client = provider.client()
    return service


def key(**fields) -> KeyRecord:
    return KeyRecord(
        id="key_t", name="t", hash="0" * 64, hint="x", scopes=["ai:invoke"], created_at=0.0, **fields
    )


def request_with(record: KeyRecord | None) -> Request:
    scope = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": []}
    return Request({**scope, "state": {"key": record} if record is not None else {}})


async def complete(service: AIServing, request: Request, model: str):
    body = CompletionBody(model=model, prompt="hi", max_tokens=4)
    return await service._answer(
        request, body, {"prompt": body.prompt, "params": body.params(16)}, chat=False
    )


def test_a_model_restricted_key_never_fails_over_to_a_model_outside_its_list():
    primary, third_party = FakeProvider(status=500), FakeProvider()
    service = serving({"a": primary, "b": third_party}, {"a": ["b"]})
    with pytest.raises(BackendsUnavailableError) as refused:
        asyncio.run(complete(service, request_with(key(models=["a"])), "a"))
    assert refused.value.tried == ["a"]  # the original failure, not b's answer
    assert third_party.calls == 0
    # A key that may use b, and a key without a model list, are served by it.
    for record in (key(models=["a", "b"]), key()):
        answer = asyncio.run(complete(service, request_with(record), "a"))
        assert answer.headers["x-swarmray-backend"] == "b"
    assert third_party.calls == 2


def test_a_restricted_key_reserves_only_for_the_fallbacks_it_may_use():
    service = serving({"a": FakeProvider(), "b": FakeProvider()}, {"a": ["b"]})
    service.config.prices["b"] = service.config.price("b").model_copy(
        update={"output_usd_per_million_tokens": 1000.0}
    )
    assert service._worst_cost("a", 10, 10) == 10_000  # any key may land on b
    assert service._worst_cost("a", 10, 10, key(models=["a"])) == 0  # this one never does
