"""The OpenAI-compatible HTTP ingress: routing, aliases, failover, breakers, usage.

Routes: GET /v1/models, POST /v1/chat/completions (SSE when `stream`), POST /v1/completions,
POST /v1/embeddings, and three of our own: GET /v1/usage, GET /v1/backends and GET /v1/audit.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from models._private.core import names
from models._private.core.breaker import CircuitBreaker
from models._private.core.errors import BackendsUnavailableError, ModelNotFoundError, RequestError
from models._private.core.retry import unwrap_error
from models._private.core.usage import Spent
from serve._private.ai.backends import InProcessBackend, LocalBackend, RemoteBackend
from serve._private.ai.config import AIServiceConfig
from serve._private.ai.deployments import ModelServer
from serve._private.ai.protocol import (
    ChatBody,
    CompletionBody,
    EmbeddingBody,
    RequestBody,
    SamplingBody,
    choice,
    encode_vector,
    sse_event,
    usage_of,
)
from serve._private.auth.audit_route import install_audit_route
from serve._private.auth.key_table import key_of
from serve._private.auth.middleware import GuardMiddleware, ai_rule, allow, install_guard, usable
from serve._private.auth.spending import Taken, refunded_on_failure, reserve, settle, token_limited
from serve._private.http_errors import error_body, error_response, install_error_handlers, request_id_of
from serve._private.metrics import service_metrics

__all__ = ["Gateway", "app"]

log = logging.getLogger("swarmray.serve")
T = TypeVar("T")
app = FastAPI(title="swarmray AI service")


# -- OpenAI-shaped errors -------------------------------------------------------------------


install_error_handlers(app)
install_audit_route(app, "ai")


@app.exception_handler(ModelNotFoundError)
async def _no_model(request: Request, exc: ModelNotFoundError) -> JSONResponse:
    return error_response(404, str(exc), "invalid_request_error", "model", "model_not_found", request)


@app.exception_handler(BackendsUnavailableError)
async def _unavailable(request: Request, exc: BackendsUnavailableError) -> JSONResponse:
    # The backends' own errors (a provider's text, a Ray error) stay in the log.
    log.warning("request %s: %s", request_id_of(request), exc)
    message = f"no backend could serve {exc.model!r} (tried {', '.join(exc.tried) or 'none'})"
    return error_response(503, message, "service_unavailable", "model", "backends_unavailable", request)


app.add_middleware(GuardMiddleware, rule=ai_rule, service="ai")
USAGE_FLUSH_S = 1.0  # how often a replica sends what it charged to the system's ledger
USAGE_SHUTDOWN_S = 5.0  # how long a stopping replica tries to send what it has not
MAX_CALLERS = 10_000  # `user`s a replica charges apart (auth off) before new ones share "others"
RESERVED_COMPLETION_TOKENS = 1024  # max_tokens of a token-limited key's request that names none
_PER_MESSAGE = 8  # tokens a chat template adds around a message, at most, in the models we serve
# Tokens a chat template adds once: a default system prompt (SmolLM2's makes a one-word chat 31
# tokens long, 19 more than its message) and the assistant's opening.
_PER_CHAT = 64
_PER_PROMPT = 2  # the tokenizer's BOS (and EOS) around a plain prompt


def _worst_case(payload: dict[str, Any]) -> tuple[int, int]:
    """The most prompt and completion tokens a request can cost: a byte-level tokenizer makes
    at most one token of a byte, plus the template's tokens; and the completion's limit. A
    template that adds more is charged its excess after (`settle`)."""
    if "messages" in payload:
        prompt = _PER_CHAT + sum(
            len(json.dumps(m.get("content", "")).encode()) + _PER_MESSAGE for m in payload["messages"]
        )
    else:
        prompts = payload["prompt"] if isinstance(payload["prompt"], list) else [payload["prompt"]]
        prompt = sum(len(str(p).encode()) + _PER_PROMPT for p in prompts)
    return prompt, payload["params"]["max_tokens"] or 0


def _billed(usage: dict[str, Any], worst: tuple[int, int]) -> tuple[int, int]:
    """The prompt and completion tokens a result is charged: what it reports, or its worst case
    when it reports none (a provider that sends no usage, a stream cut before its last chunk)."""
    if usage["prompt_tokens"] or usage["completion_tokens"]:
        return usage["prompt_tokens"], usage["completion_tokens"]
    return worst


# With `stream: true` a completion comes as server-sent events; before OpenAPI 3.2 the schema of
# an event stream describes one event.
_EVENT = {
    "type": "object",
    "properties": {
        "data": {"type": "string", "description": "A JSON chunk, an error object, or [DONE] at the end."},
        "event": {"type": "string"},
    },
    "required": ["data"],
}
_STREAMED: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {"schema": _EVENT}}}}


# Everything the routes use is defined above this line: `serve.ingress` pickles the app when
# the class is decorated, so later module globals would be missing in the replica.
# -- the ingress deployment -----------------------------------------------------------------


@serve.deployment(name=names.GATEWAY_DEPLOYMENT, ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Gateway:
    """Routes OpenAI-style requests to model deployments and remote providers.

    Args:
        config: The AIServiceConfig, dumped.
        models: Model name -> DeploymentHandle of its ModelServer.
        embedder: DeploymentHandle of the EmbeddingServer, or None.
        system: The system (Ray namespace) whose key authority checks requests (auth on).
    """

    def __init__(
        self, config: dict[str, Any], models: dict[str, Any], embedder: Any = None, system: str = "ai"
    ):
        self.config = AIServiceConfig.model_validate(config)
        install_guard(self.config.auth, system, "ai")
        colocated = [m for m in self.config.models.values() if m.colocate]
        self.backends: dict[str, LocalBackend | InProcessBackend | RemoteBackend] = {
            **{name: LocalBackend(name, h) for name, h in models.items()},
            **{m.name: InProcessBackend(m.name, ModelServer(m.model_dump())) for m in colocated},
            **{p.name: RemoteBackend(p) for p in self.config.providers.values()},
        }
        self.settings = {b.name: b for b in self.config.backends()}
        self.aliases = {a: b.name for b in self.config.backends() for a in b.aliases}
        self.breakers = {name: CircuitBreaker(self.config.breaker) for name in self.backends}
        self.embedder = embedder
        self.created = int(time.time())
        self.metrics = service_metrics(system, "ai")
        self.system = system
        self._unsent: dict[tuple[str, str], Spent] = {}  # (caller, model) -> charged, not yet sent
        self._outgoing: dict[str, Any] | None = None  # the batch being sent (and resent)
        self._ledger: Any = None  # the key authority's handle
        self._flusher: asyncio.Task | None = None
        self._sending = asyncio.Lock()  # one batch in flight: a reader of /v1/usage sends too
        self._callers: set[str] = set()  # with auth off, the `user`s seen (bounded)
        self.metrics.breakers({name: b.state for name, b in self.breakers.items()})

    async def check_health(self) -> None:
        """Serve's health check: a colocated model's engine must be alive, as its own
        deployment's would have to be (raising restarts this replica)."""
        for backend in self.backends.values():
            if isinstance(backend, InProcessBackend):
                await backend.server.check_health()

    # -- routing --------------------------------------------------------------------------

    def _chain(self, model: str) -> list[str]:
        name = self.aliases.get(model, model)
        if name not in self.backends:
            raise ModelNotFoundError(model, [*self.backends, *self.aliases])
        return list(dict.fromkeys([name, *self.settings[name].fallbacks]))

    async def _failover(self, model: str, attempt: Callable[[str], Awaitable[T]]) -> tuple[str, T]:
        """`attempt(backend)` on the model's backends in order, skipping open breakers, until one
        succeeds; a refused request goes straight back to the client."""
        tried, last = [], "breaker open"
        for name in self._chain(model):
            breaker = self.breakers[name]
            if not breaker.allow():
                continue
            tried.append(name)
            since = breaker.clock()
            try:
                result = await asyncio.wait_for(attempt(name), self.settings[name].timeout_s)
            except asyncio.CancelledError:
                breaker.abandon()  # the client left; a probe must not stay in flight forever
                raise
            except Exception as e:
                err = unwrap_error(e)
                if isinstance(err, RequestError):
                    breaker.success(since)  # the backend answered; the request was at fault
                    raise err from None
                breaker.failure()
                self.metrics.breakers({name: breaker.state})
                last = f"{name}: {err!r}"
                log.warning("backend %s failed (%r); falling back", name, err)
                continue
            breaker.success(since)  # unless the breaker opened while this call was out
            self.metrics.breakers({name: breaker.state})
            return name, result
        raise BackendsUnavailableError(model, tried, last)

    async def _open_stream(
        self, model: str, request: dict[str, Any]
    ) -> tuple[str, tuple[dict[str, Any], AsyncIterator[dict[str, Any]]]]:
        # Failover is possible until the first piece arrives; after that the stream is committed.
        async def first_piece(name: str) -> tuple[dict[str, Any], AsyncIterator[dict[str, Any]]]:
            stream = aiter(self.backends[name].stream(request))
            return await anext(stream), stream

        return await self._failover(model, first_piece)

    def _worst_cost(self, model: str, prompt: int, completion: int) -> int:
        # Failover may land on any backend of the chain: reserve for the dearest.
        return max(self.config.price(name).cost_microusd(prompt, completion) for name in self._chain(model))

    async def _charge(
        self, request: Request, taken: Taken, name: str, usage: dict[str, Any], worst: tuple[int, int]
    ) -> tuple[int, int, int]:
        """Settles what `name`'s answer cost (`_billed`); returns its prompt and completion
        tokens and its cost in micro-dollars."""
        prompt, completion = _billed(usage, worst)
        cost = self.config.price(name).cost_microusd(prompt, completion)
        await settle(request, "ai", taken, prompt + completion, cost)
        return prompt, completion, cost

    def _account(
        self,
        request: Request,
        body: RequestBody,
        model: str,
        prompt: int,
        completion: int,
        cost_microusd: int,
    ) -> None:
        # Per key with auth on; with it off (loopback only), per `user` up to MAX_CALLERS, so
        # that no caller can grow the ledger without bound.
        key = key_of(request)
        caller = key.id if key is not None else (body.user or "anonymous")
        if key is None and caller not in self._callers:
            if len(self._callers) >= MAX_CALLERS:
                caller = "others"
            else:
                self._callers.add(caller)
        cost_usd = cost_microusd / 1e6
        request.state.tokens, request.state.cost_usd = prompt + completion, cost_usd  # for the audit
        # A key's id, or none with auth off (a caller's `user` is theirs to choose: unbounded).
        self.metrics.charged(model, key.id if key is not None else "none", prompt, completion, cost_usd)
        spent = Spent(
            requests=1, prompt_tokens=prompt, completion_tokens=completion, cost_microusd=cost_microusd
        )
        self._unsent.setdefault((caller, model), Spent()).add(spent)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_usage())

    async def _flush_usage(self) -> None:
        """Sends what this replica charged to the system's ledger (the key authority) every
        USAGE_FLUSH_S while there is any; a batch that did not arrive is sent again, under its
        id, so that it counts once."""
        while self._unsent or self._outgoing is not None:
            await asyncio.sleep(USAGE_FLUSH_S)
            await self._send_usage()

    async def _send_usage(self) -> None:
        """Sends what is unsent as one batch (or the batch that did not arrive, again)."""
        async with self._sending:
            if self._outgoing is None and self._unsent:
                rows = [[k, m, s.model_dump()] for (k, m), s in self._unsent.items()]
                self._outgoing, self._unsent = {"id": uuid.uuid4().hex, "at": time.time(), "rows": rows}, {}
            if self._outgoing is None:
                return
            try:
                await (await self._the_ledger()).record_usage.remote(self._outgoing)
                self._outgoing = None
            except Exception as e:
                self._ledger = None
                log.warning("the usage ledger did not take a batch (%r); sending it again", unwrap_error(e))

    async def _the_ledger(self) -> Any:
        if self._ledger is None:  # looked up once, off the loop (it asks Ray's control store)
            from ray import get_actor

            from models._private.core.names import authority_name

            where = authority_name(self.system)
            self._ledger = await asyncio.to_thread(get_actor, where, namespace=self.system)
        return self._ledger

    async def __del__(self) -> None:
        # Serve's graceful shutdown (a scale-down, `swarm down`): what this replica charged
        # and has not sent goes now, with one try.
        if getattr(self, "_unsent", None) or getattr(self, "_outgoing", None) is not None:
            if self._flusher is not None:
                self._flusher.cancel()  # a batch it was sending keeps its id: counted once
            try:
                await asyncio.wait_for(self._send_usage(), USAGE_SHUTDOWN_S)
            except Exception as e:
                log.warning("usage not sent at shutdown: %r", e)

    # -- endpoints ------------------------------------------------------------------------

    @app.get("/v1/models")
    async def list_models(self, request: Request) -> dict[str, Any]:
        ids = [*self.backends, *self.aliases]
        if self.embedder is not None:
            ids.append(self.config.embeddings_model)
        ids = usable(request, ids, "model")  # a key sees the models it may use
        return {
            "object": "list",
            "data": [
                {"id": i, "object": "model", "created": self.created, "owned_by": "swarmray"} for i in ids
            ],
        }

    @app.post("/v1/chat/completions", responses=_STREAMED)
    async def chat(self, body: ChatBody, request: Request) -> Any:
        max_tokens = body.max_completion_tokens or body.max_tokens
        payload = {
            "messages": [m.plain() for m in body.messages],
            # Without max_tokens a chat completion may fill the context, as vLLM's server does.
            "params": body.model_copy(update={"max_tokens": max_tokens}).params(None),
        }
        return await self._answer(request, body, payload, chat=True)

    @app.post("/v1/completions", responses=_STREAMED)
    async def completions(self, body: CompletionBody, request: Request) -> Any:
        payload = {"prompt": body.prompt, "params": body.params(16)}
        return await self._answer(request, body, payload, chat=False)

    async def _answer(self, request: Request, body: SamplingBody, payload: dict[str, Any], chat: bool) -> Any:
        allow(request, model=body.model)
        if token_limited(request) and payload["params"]["max_tokens"] is None:
            # A worst case needs an end: a token-limited key's open-ended request gets one.
            payload["params"]["max_tokens"] = RESERVED_COMPLETION_TOKENS
        worst = _worst_case(payload)
        taken = await reserve(request, "ai", sum(worst), self._worst_cost(body.model, *worst))
        rid, created = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            return await self._sse(request, body, payload, chat, rid, created, (taken, worst))
        complete = self._failover(body.model, lambda b: self.backends[b].complete(payload))
        name, out = await refunded_on_failure(request, "ai", taken, complete)
        prompt, completion, cost = await self._charge(request, taken, name, out, worst)
        self._account(request, body, name, prompt, completion, cost)
        return JSONResponse(
            {
                "id": rid,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": name,
                "choices": [choice(chat, out["text"], out["finish_reason"])],
                "usage": usage_of(out),
            },
            headers={names.BACKEND_HEADER: name, names.COST_HEADER: str(cost)},
        )

    async def _sse(
        self,
        request: Request,
        body: SamplingBody,
        payload: dict[str, Any],
        chat: bool,
        rid: str,
        created: int,
        reserved: tuple[Taken, tuple[int, int]],
    ) -> StreamingResponse:
        taken, worst = reserved
        opening = self._open_stream(body.model, payload)
        name, (first, stream) = await refunded_on_failure(request, "ai", taken, opening)
        kind = "chat.completion.chunk" if chat else "text_completion"
        include_usage = bool((body.stream_options or {}).get("include_usage"))

        def chunk(piece: dict[str, Any], opening: bool = False) -> str:
            c = choice(chat, piece["text"], piece["finish_reason"], stream=True, first=opening)
            return sse_event({"id": rid, "object": kind, "created": created, "model": name, "choices": [c]})

        async def events() -> AsyncIterator[str]:
            last = first
            try:
                yield chunk(first, opening=True)
                async for piece in stream:
                    last = piece
                    yield chunk(piece)
            except Exception as e:  # committed: report in-band, as OpenAI does
                request_id = request_id_of(request)
                log.warning("request %s: stream from %s broke: %r", request_id, name, unwrap_error(e))
                self.breakers[name].failure()  # no failover now, but the backend did fail
                self.metrics.breakers({name: self.breakers[name].state})
                message = f"the stream from {name} broke; the service log has the details"
                yield sse_event(error_body(message, "server_error", None, "stream_interrupted", request_id))
                return
            finally:  # what the stream cost by its last piece; the rest goes back
                billed = await self._charge(request, taken, name, last, worst)
            self._account(request, body, name, *billed)
            if include_usage:
                yield sse_event(
                    {
                        "id": rid,
                        "object": kind,
                        "created": created,
                        "model": name,
                        "choices": [],
                        "usage": usage_of(last),
                    }
                )
            yield "data: [DONE]\n\n"

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={names.BACKEND_HEADER: name}
        )

    @app.post("/v1/embeddings")
    async def embeddings(self, body: EmbeddingBody, request: Request, response: Response) -> dict[str, Any]:
        allow(request, model=body.model)
        if self.embedder is None or body.model != self.config.embeddings_model:
            known = [self.config.embeddings_model] if self.embedder is not None else []
            raise ModelNotFoundError(body.model, known)
        texts = [body.input] if isinstance(body.input, str) else body.input
        if bad := [i for i, t in enumerate(texts) if not t.strip()]:
            raise RequestError(f"input.{bad[0]}", "is empty")
        worst = sum(len(t.encode()) + 2 for t in texts)  # a token is a byte at least, plus CLS/SEP
        price = self.config.price(body.model)
        taken = await reserve(request, "ai", worst, price.cost_microusd(worst, 0))
        out = await refunded_on_failure(request, "ai", taken, self.embedder.embed.remote(texts))
        used = 0 if out.get("too_long") else sum(out["tokens"])
        cost = price.cost_microusd(used, 0)
        await settle(request, "ai", taken, used, cost)
        if out.get("too_long"):  # refused, as OpenAI does, rather than cut and counted whole
            i, n = out["too_long"][0]
            raise RequestError(
                "input" if isinstance(body.input, str) else f"input.{i}",
                f"is {n} tokens long; {body.model} reads at most {out['max_tokens']} tokens of a "
                "text and would drop the rest: split it",
                code="context_length_exceeded",
            )
        tokens = sum(out["tokens"])
        self._account(request, body, body.model, tokens, 0, cost)
        response.headers[names.COST_HEADER] = str(cost)
        return {
            "object": "list",
            "model": body.model,
            "data": [
                {"object": "embedding", "index": i, "embedding": encode_vector(v, body.encoding_format)}
                for i, v in enumerate(out["vectors"])
            ],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @app.get("/v1/usage")
    async def get_usage(self, request: Request, since: float | None = None) -> Any:
        """Tokens and cost per caller and model for the whole AI service, since a UNIX time if
        given, from the system's ledger (the key authority). What this replica charged is sent
        first; another replica's last second may not be there yet. A key without admin sees its
        own row; an admin key with a model list sees the others' rows of those models only."""
        await self._send_usage()
        key = key_of(request)
        own = key.id if key is not None and "admin" not in key.scopes else None  # its row only
        try:
            ledger = await self._the_ledger()
            rows = await ledger.usage_totals.remote(["key", "model"], since, own)
        except Exception as e:
            self._ledger = None
            log.warning(
                "request %s: the usage ledger did not answer: %r", request_id_of(request), unwrap_error(e)
            )
            message = "the usage ledger is not answering; try again shortly"
            return error_response(503, message, "service_unavailable", None, "ledger_unavailable", request)
        callers: dict[str, dict[str, dict[str, Any]]] = {}
        for row in rows:
            callers.setdefault(row["key"], {})[row["model"]] = {
                "requests": row["requests"],
                "prompt_tokens": row["prompt_tokens"],
                "completion_tokens": row["completion_tokens"],
                "cost_usd": row["cost_microusd"] / 1e6,
            }
        if own is not None:
            return {"callers": {own: callers.get(own, {})}}
        seen = {
            caller: {
                m: n
                for m, n in rows.items()
                if caller == getattr(key, "id", None) or usable(request, [m], "model")
            }
            for caller, rows in callers.items()
        }
        return {"callers": {c: rows for c, rows in seen.items() if rows}}

    @app.get("/v1/backends")
    async def get_backends(self, request: Request) -> dict[str, Any]:
        """Each backend's kind, breaker and routes (those an admin key with a model list may use)."""
        return {
            name: {
                "kind": "provider" if isinstance(b, RemoteBackend) else "model",
                "breaker": self.breakers[name].state,
                "failures": self.breakers[name].failures,
                "fallbacks": self.settings[name].fallbacks,
                "aliases": self.settings[name].aliases,
            }
            for name, b in self.backends.items()
            if usable(request, [name], "model")
        }
