"""The AI service's serving logic in-process, without Ray: the real AIServing with real remote
backends (httpx) talking to fake providers, small ASGI apps behind httpx's ASGI transport."""

import asyncio
import json

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from models._private.core.errors import BackendsUnavailableError
from serve._private.ai.protocol import CompletionBody
from serve._private.ai.serving import AIServing
from serve._private.auth import key_table
from serve._private.auth.config import AuthConfig
from serve._private.auth.key_table import KeyTableReplica
from serve._private.auth.keys import KeyRecord
from serve._private.auth.leases import Spender
from serve._private.auth.quota import Ledger, limit_of, period_of


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


# -- a client that leaves: what the backend did is charged, to the limits and the ledger ------


class _Remote:
    """A method of a fake Ray actor handle: `.remote(...)` answers in a later turn of the loop."""

    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        async def later():
            await asyncio.sleep(0)
            return self.fn(*args)

        return later()


class LedgerAuthority:
    """The key authority's limits, as a replica's Spender calls them: the real Ledger."""

    def __init__(self, record: KeyRecord):
        self.ledger, self.record = Ledger(lease_share=0.0, tight_share=0.0), record
        self.acquire = _Remote(self._acquire)
        self.release = _Remote(self.ledger.release)

    def _acquire(self, key_id, counter, n, force=False, stale=None):
        if stale:
            self.ledger.release(key_id, counter, *stale)
        limit, period = limit_of(self.record, counter), period_of(self.record, counter)
        return vars(self.ledger.acquire(key_id, counter, limit, period, n, 30.0, force))


@pytest.fixture
def budgeted(tmp_path):
    """A key with a token budget, and this process's key table of "ai" spending against it."""
    record = key(budget_tokens=10_000, budget_period_s=86400.0)
    authority = LedgerAuthority(record)
    table = KeyTableReplica("unit", AuthConfig(enabled=True, path=str(tmp_path)), "unit-ai")
    table.spender = Spender(authority)
    key_table.install_key_table("ai", table)
    yield record, authority
    key_table._TABLES.pop("ai", None)


class HangingProvider:
    """A provider that takes the request and never finishes its answer: a whole completion
    never comes; a stream sends one piece and then nothing."""

    def __init__(self):
        self.called = asyncio.Event()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.called.set()
        if not json.loads(request.content)["stream"]:
            await asyncio.Event().wait()

        async def events():
            yield b'data: {"choices":[{"index":0,"delta":{"content":"half"},"finish_reason":null}]}\n\n'
            await asyncio.Event().wait()

        return httpx.Response(200, content=events(), headers={"content-type": "text/event-stream"})


def hanging_serving() -> tuple[AIServing, HangingProvider]:
    service = serving({"a": FakeProvider()}, {})
    provider = HangingProvider()
    transport = httpx.MockTransport(provider.handle)
    service.backends["a"].client = httpx.AsyncClient(transport=transport, base_url="http://provider/v1/")
    return service, provider


WORST = len(b"hi") + 2 + 4  # the prompt's bytes, BOS and EOS, and max_tokens


def spent(authority: LedgerAuthority, record: KeyRecord) -> int:
    """Units of the budget granted and not held unspent in this replica's lease."""
    lease = key_table.key_table_of("ai").spender.leases.get((record.id, "budget"))
    return authority.ledger.used(record.id, "budget", 0) - (lease.free if lease else 0)


def test_a_client_that_leaves_during_a_completion_is_charged_its_reservation_in_the_ledger(budgeted):
    record, authority = budgeted
    service, provider = hanging_serving()

    async def run():
        task = asyncio.create_task(complete(service, request_with(record), "a"))
        await provider.called.wait()  # the backend is at work
        task.cancel()  # Serve cancels the handler when the client disconnects
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert spent(authority, record) == WORST  # the reservation stays charged, not refunded
    ledger = service.usage.unsent[(record.id, "a")]
    assert (ledger.requests, ledger.prompt_tokens + ledger.completion_tokens) == (1, WORST)


def test_a_stream_cut_by_the_client_is_charged_and_reaches_the_ledger(budgeted):
    record, authority = budgeted
    service, _ = hanging_serving()

    async def run():
        body = CompletionBody(model="a", prompt="hi", max_tokens=4, stream=True)
        payload = {"prompt": body.prompt, "params": body.params(16)}
        response = await service._answer(request_with(record), body, payload, chat=False)
        first_piece = asyncio.Event()

        async def send(message):
            if message.get("body"):
                first_piece.set()

        async def receive():  # the client reads the first piece, then hangs up
            await first_piece.wait()
            return {"type": "http.disconnect"}

        await response({"type": "http", "method": "POST", "path": "/v1/completions"}, receive, send)

    asyncio.run(run())
    # A provider's stream reports its usage at its end only: cut before, its worst case.
    assert spent(authority, record) == WORST
    ledger = service.usage.unsent[(record.id, "a")]
    assert (ledger.requests, ledger.prompt_tokens + ledger.completion_tokens) == (1, WORST)
