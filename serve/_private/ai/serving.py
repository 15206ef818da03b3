"""The AI service's serving logic behind its routes: routing a model to its backends with
failover and circuit breakers, the worst case a request reserves and what its answer is charged
(by the price table), streaming as server-sent events, and sending what a replica charged to the
system's usage ledger (the key authority)."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time,
# and the routes' class is built on this one.

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from models._private.core import names
from models._private.core.breaker import CircuitBreaker
from models._private.core.errors import (
    BackendsUnavailableError,
    ModelNotFoundError,
    ModelOverloadedError,
    RequestError,
)
from models._private.core.retry import unwrap_error
from models._private.core.usage import Spent
from models._private.engines.tool_calls import (
    ToolCallStream,
    forced_tool_calls,
    parse_tool_calls,
    tool_prompt,
)
from serve._private.ai.admission import AnswerPace, queued_of
from serve._private.ai.backends import InProcessBackend, LocalBackend, RemoteBackend
from serve._private.ai.config import AIServiceConfig
from serve._private.ai.deployments import ModelServer
from serve._private.ai.protocol import ChatBody, RequestBody, SamplingBody, choice, sse_event, usage_of
from serve._private.auth.key_table import key_of
from serve._private.auth.keys import KeyRecord
from serve._private.auth.middleware import allow, install_guard
from serve._private.auth.spending import Taken, refunded_on_failure, reserve, settle, token_limited
from serve._private.auth.usage_batches import UsageBatches
from serve._private.http_errors import error_body, request_id_of
from serve._private.metrics import service_metrics
from serve._private.tracing import install_tracing

__all__ = ["MAX_CALLERS", "RESERVED_COMPLETION_TOKENS", "USAGE_SHUTDOWN_S", "AIServing"]

log = logging.getLogger("swarmray.serve")
T = TypeVar("T")

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
            len(json.dumps(m.get("content", "")).encode())
            + (len(json.dumps(m["tool_calls"]).encode()) if m.get("tool_calls") else 0)
            + _PER_MESSAGE
            for m in payload["messages"]
        )
        # The tools, offered in the fallback's system message (a template that renders them
        # adds about as much; more is charged after).
        if tools := payload.get("tools") or payload.get("openai", {}).get("tools"):
            prompt += len(tool_prompt(tools).encode())
    else:
        prompts = payload["prompt"] if isinstance(payload["prompt"], list) else [payload["prompt"]]
        prompt = sum(len(str(p).encode()) + _PER_PROMPT for p in prompts)
    return prompt, payload["params"]["max_tokens"] or 0


class _ToolAnswer:
    """Reads a chat completion's tool calls as its request asked for them: parsed out of the
    text with `tool_choice: auto`, read from the constrained JSON when required or named, and
    taken as they are from a remote provider (it parsed them); also over a stream, as OpenAI's
    deltas."""

    def __init__(self, body: RequestBody, remote: bool):
        self.chat = chat = isinstance(body, ChatBody)
        self.mode = "none" if remote or not chat else body.tool_mode()
        self.names = {t.function.name for t in body.tools or []} if chat else set()
        self.named = body.tool_choice.function.name if self.mode == "named" else None  # type: ignore[union-attr]
        self.calls = 0  # tool calls answered, for the audit
        self._stream = ToolCallStream(self.names)
        self._held: list[str] = []
        self._index = 0
        self._opened = False  # a chunk has been made (the first carries the role)

    def message(self, out: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]] | None, str]:
        """A whole completion's content, tool calls and finish reason."""
        text, finish = out["text"], out["finish_reason"]
        calls: list[dict[str, Any]] | None = out.get("tool_calls")  # a provider's
        content: str | None = text
        if self.mode == "auto":
            content, calls = parse_tool_calls(text, self.names)
        elif self.mode in ("required", "named"):
            calls = forced_tool_calls(text, self.named)
            content = None if calls else text
        if calls:
            self.calls = len(calls)
            content = content or None
            if "tool_calls" not in out:
                finish = "tool_calls"
        return content, calls or None, finish

    def deltas(self, piece: dict[str, Any]) -> list[dict[str, Any]]:
        """A streamed piece's deltas (none while text is held back); the last piece's include
        what was held."""
        text, last = piece["text"], piece["finish_reason"] is not None
        if self.mode == "none":
            delta: dict[str, Any] = {"content": text}
            if piece.get("tool_calls"):  # a provider's fragments, relayed as they come
                delta["tool_calls"] = piece["tool_calls"]
                self.calls += sum(1 for c in piece["tool_calls"] if c.get("id"))
            return [delta]
        out: list[dict[str, Any]] = []
        if self.mode == "auto":
            if safe := self._stream.feed(text):
                out.append({"content": safe})
            if last:
                content, calls = self._stream.finish()
                out += self._with_calls(content, calls)
        else:
            self._held.append(text)
            if last:
                held = "".join(self._held)
                calls = forced_tool_calls(held, self.named)
                out += self._with_calls(None if calls else held, calls or [])
        return out

    def _with_calls(self, content: str | None, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # OpenAI's shape: a call's first delta has its index, id, type and name with empty
        # arguments; its argument text follows.
        out: list[dict[str, Any]] = [{"content": content}] if content else []
        for call in calls:
            fn = call["function"]
            head = {"index": self._index, "id": call["id"], "type": "function"}
            out.append({"tool_calls": [{**head, "function": {"name": fn["name"], "arguments": ""}}]})
            out.append({"tool_calls": [{"index": self._index, "function": {"arguments": fn["arguments"]}}]})
            self._index += 1
        self.calls += len(calls)
        return out

    def finish(self, reason: str) -> str:
        return "tool_calls" if self.mode != "none" and self.calls else reason

    def choices(self, piece: dict[str, Any]) -> list[dict[str, Any]]:
        """The `choices` entries of the chunks a streamed piece makes: the first carries the
        role, the last of the last piece the finish reason."""
        if not self.chat:
            return [choice(False, piece["text"], piece["finish_reason"], stream=True)]
        deltas = self.deltas(piece)  # first: the finish reason depends on the calls
        finish = piece["finish_reason"] and self.finish(piece["finish_reason"])
        if not deltas and (finish or not self._opened):
            deltas = [{"content": ""}]  # the role's opening, or the end
        out = []
        for i, delta in enumerate(deltas):
            out.append(
                choice(
                    True,
                    delta.get("content"),
                    finish if i == len(deltas) - 1 else None,
                    stream=True,
                    first=not self._opened,
                    tool_calls=delta.get("tool_calls"),
                )
            )
            self._opened = True
        return out


def _billed(usage: dict[str, Any], worst: tuple[int, int]) -> tuple[int, int]:
    """The prompt and completion tokens a result is charged: what it reports, or its worst case
    when it reports none (a provider that sends no usage, a stream cut before its last chunk)."""
    if usage["prompt_tokens"] or usage["completion_tokens"]:
        return usage["prompt_tokens"], usage["completion_tokens"]
    return worst


class AIServing:
    """What the AI service's ingress does for its routes (`routes.Gateway` is this class with
    the routes on it).

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
        install_tracing(self.config.tracing, system, "ai")
        colocated = [m for m in self.config.models.values() if m.colocate]
        self.backends: dict[str, LocalBackend | InProcessBackend | RemoteBackend] = {
            **{name: LocalBackend(name, h) for name, h in models.items()},
            **{m.name: InProcessBackend(m.name, ModelServer(m.model_dump())) for m in colocated},
            **{p.name: RemoteBackend(p) for p in self.config.providers.values()},
        }
        self.settings = {b.name: b for b in self.config.backends()}
        self.aliases = {a: b.name for b in self.config.backends() for a in b.aliases}
        self.breakers = {name: CircuitBreaker(self.config.breaker) for name in self.backends}
        # Each backend's answers: a full queue's retry hint, and whether a model still answers anyone.
        self.paces = {name: AnswerPace() for name in self.backends}
        self.embedder = embedder
        self.created = int(time.time())
        self.metrics = service_metrics(system, "ai")
        self.system = system
        self.usage = UsageBatches(system)  # what this replica charged, on its way to the ledger
        self._callers: set[str] = set()  # with auth off, the `user`s seen (bounded)
        self.metrics.breakers({name: b.state for name, b in self.breakers.items()})

    async def check_health(self) -> None:
        """Serve's health check: a colocated model's engine must be alive, as its own
        deployment's would have to be (raising restarts this replica)."""
        for backend in self.backends.values():
            if isinstance(backend, InProcessBackend):
                await backend.server.check_health()

    async def engine_counters(self) -> dict[str, dict[str, Any]]:
        """Each local model's `ModelServer.counters`: a colocated one's in this replica, a model
        deployment's from one of its replicas (for benchmarks, through a Serve handle: no route)."""
        counters: dict[str, dict[str, Any]] = {}
        for name, b in self.backends.items():
            if isinstance(b, InProcessBackend):
                counters[name] = b.server.counters()
            elif isinstance(b, LocalBackend):
                counters[name] = await b.handle.counters.remote()
        return counters

    # -- routing --------------------------------------------------------------------------

    def _chain(self, model: str, key: KeyRecord | None = None) -> list[str]:
        """The backends that may serve `model`, in order: it, then its fallbacks that `key` may
        use (a fallback outside a key's model list, by its name or an alias, is skipped)."""
        name = self.aliases.get(model, model)
        if name not in self.backends:
            raise ModelNotFoundError(model, [*self.backends, *self.aliases])
        chain = list(dict.fromkeys([name, *self.settings[name].fallbacks]))
        if key is None or key.models is None:
            return chain
        return [name] + [n for n in chain[1:] if {n, *self.settings[n].aliases} & set(key.models)]

    async def _failover(
        self, model: str, attempt: Callable[[str], Awaitable[T]], key: KeyRecord | None = None
    ) -> tuple[str, T]:
        """`attempt(backend)` on the model's backends that `key` may use, in order, skipping open
        breakers, until one succeeds; a refused request goes straight back to the client."""
        tried, last = [], "breaker open"
        for name in self._chain(model, key):
            breaker = self.breakers[name]
            if not breaker.allow():
                continue
            tried.append(name)
            since = breaker.clock()
            timeout_s = self.settings[name].timeout_s
            if isinstance(self.backends[name], RemoteBackend):
                # A provider's deadline runs from the call.
                work = asyncio.wait_for(attempt(name), timeout_s)
            else:
                # A model's server runs it from when its engine admits the request (admission.py):
                # a wait in a busy engine's queue is no failure, as long as the model answers
                # others meanwhile.
                work = self.paces[name].watched(name, attempt(name), timeout_s)
            try:
                result = await work
            except asyncio.CancelledError:
                breaker.abandon()  # the client left; a probe must not stay in flight forever
                raise
            except Exception as e:
                err = unwrap_error(e)
                if isinstance(err, RequestError):
                    breaker.success(since)  # the backend answered; the request was at fault
                    self.paces[name].progressed(time.monotonic())
                    raise err from None
                if (busy := self._overloaded(name, err)) is not None:
                    # Busy, not broken: no verdict, and no fallback (which may be a paid provider
                    # or another model); the client comes back when the hint says.
                    breaker.abandon()
                    raise busy from None
                breaker.failure()
                self.metrics.breakers({name: breaker.state})
                last = f"{name}: {err!r}"
                log.warning("backend %s failed (%r); falling back", name, err)
                continue
            breaker.success(since)  # unless the breaker opened while this call was out
            self.metrics.breakers({name: breaker.state})
            self.paces[name].answered(time.monotonic())
            return name, result
        raise BackendsUnavailableError(model, tried, last)

    def _overloaded(self, name: str, err: BaseException) -> ModelOverloadedError | None:
        """A model's full queue as the client is told of it, with a retry hint from the pace
        its answers come at here; None for any other error. Its server refused (colocated, or
        in its replica), or Serve's handle did (`max_queued_requests` of its deployment)."""
        if isinstance(err, ModelOverloadedError):
            queued, max_queued = err.queued, err.max_queued
        elif (counts := queued_of(err)) is not None:
            queued, max_queued = counts
        else:
            return None
        return ModelOverloadedError(name, queued, max_queued, self.paces[name].retry_after_s(queued))

    async def _open_stream(
        self, model: str, request: dict[str, Any], key: KeyRecord | None = None
    ) -> tuple[str, tuple[dict[str, Any], AsyncIterator[dict[str, Any]]]]:
        # Failover is possible until the first piece arrives; after that the stream is committed.
        async def first_piece(name: str) -> tuple[dict[str, Any], AsyncIterator[dict[str, Any]]]:
            stream = aiter(self.backends[name].stream(request))
            return await anext(stream), stream

        return await self._failover(model, first_piece, key)

    def _worst_cost(self, model: str, prompt: int, completion: int, key: KeyRecord | None = None) -> int:
        # Failover may land on any backend of the chain `key` may use: reserve for the dearest.
        chain = self._chain(model, key)
        return max(self.config.price(name).cost_microusd(prompt, completion) for name in chain)

    async def _bill(
        self,
        request: Request,
        body: RequestBody,
        taken: Taken,
        name: str,
        usage: dict[str, Any],
        worst: tuple[int, int],
    ) -> int:
        """Settles what `name`'s answer cost (`_billed`) and puts it in the ledger; returns its
        cost in micro-dollars. It runs to its end even if the request is cancelled meanwhile
        (the client left): the work was done."""

        async def bill() -> int:
            prompt, completion = _billed(usage, worst)
            cost = self.config.price(name).cost_microusd(prompt, completion)
            await settle(request, "ai", taken, prompt + completion, cost)
            self._account(request, body, name, prompt, completion, cost)
            return cost

        return await asyncio.shield(asyncio.ensure_future(bill()))

    async def _reserved(
        self,
        request: Request,
        body: RequestBody,
        taken: Taken,
        reservation: tuple[str, int, int, int],
        work: Awaitable[T],
    ) -> T:
        """`work`'s result. If it fails, its reservation goes back; if the request is cancelled
        while it runs (the client left), the backend may have done the work: the reservation
        (`reservation`: model, prompt and completion tokens, cost) stays charged, and is put in
        the ledger."""
        try:
            return await refunded_on_failure(request, "ai", taken, work)
        except asyncio.CancelledError:
            self._account(request, body, *reservation)
            raise

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
        self.usage.add(caller, model, spent)

    async def __del__(self) -> None:
        # Serve's graceful shutdown (a scale-down, `swarm down`): what this replica charged
        # and has not sent goes now, with one try.
        if getattr(self, "usage", None) is not None:
            await self.usage.close(USAGE_SHUTDOWN_S)

    # -- completions ----------------------------------------------------------------------

    async def _answer(self, request: Request, body: SamplingBody, payload: dict[str, Any], chat: bool) -> Any:
        allow(request, model=body.model)
        if token_limited(request) and payload["params"]["max_tokens"] is None:
            # A worst case needs an end: a token-limited key's open-ended request gets one.
            payload["params"]["max_tokens"] = RESERVED_COMPLETION_TOKENS
        worst = _worst_case(payload)
        key = key_of(request)
        worst_cost = self._worst_cost(body.model, *worst, key)
        taken = await reserve(request, "ai", sum(worst), worst_cost)
        reservation = (self._chain(body.model)[0], *worst, worst_cost)
        rid, created = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            return await self._sse(request, body, payload, chat, rid, created, (taken, worst, reservation))
        complete = self._failover(body.model, lambda b: self.backends[b].complete(payload), key)
        name, out = await self._reserved(request, body, taken, reservation, complete)
        cost = await self._bill(request, body, taken, name, out, worst)
        tools = _ToolAnswer(body, isinstance(self.backends[name], RemoteBackend))
        content, calls, finish = tools.message(out)
        if calls:
            request.state.tool_calls = len(calls)  # for the audit: how many, never what
        return JSONResponse(
            {
                "id": rid,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": name,
                "choices": [choice(chat, content, finish, tool_calls=calls)],
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
        reserved: tuple[Taken, tuple[int, int], tuple[str, int, int, int]],
    ) -> StreamingResponse:
        taken, worst, reservation = reserved
        opening = self._open_stream(body.model, payload, key_of(request))
        name, (first, stream) = await self._reserved(request, body, taken, reservation, opening)
        kind = "chat.completion.chunk" if chat else "text_completion"
        include_usage = bool((body.stream_options or {}).get("include_usage"))

        tools = _ToolAnswer(body, isinstance(self.backends[name], RemoteBackend))

        def chunks(piece: dict[str, Any]) -> list[str]:
            return [
                sse_event({"id": rid, "object": kind, "created": created, "model": name, "choices": [c]})
                for c in tools.choices(piece)
            ]

        async def events() -> AsyncIterator[str]:
            last = first
            try:
                for event in chunks(first):
                    yield event
                async for piece in stream:
                    last = piece
                    self.paces[name].progressed(time.monotonic())  # a stream's pieces: alive
                    for event in chunks(piece):
                        yield event
            except Exception as e:  # committed: report in-band, as OpenAI does
                request_id = request_id_of(request)
                log.warning("request %s: stream from %s broke: %r", request_id, name, unwrap_error(e))
                self.breakers[name].failure()  # no failover now, but the backend did fail
                self.metrics.breakers({name: self.breakers[name].state})
                message = f"the stream from {name} broke; the service log has the details"
                yield sse_event(error_body(message, "server_error", None, "stream_interrupted", request_id))
                return
            finally:
                # What the stream cost by its last piece (the rest goes back), to the limits and
                # the ledger, also when it broke or the client left (cancelled here).
                await self._bill(request, body, taken, name, last, worst)
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
