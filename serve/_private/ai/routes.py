"""The OpenAI-compatible HTTP ingress: its routes and the errors they answer (the routing,
failover, pricing, streaming and usage behind them are in `serving`).

Routes: GET /v1/models, POST /v1/chat/completions (SSE when `stream`), POST /v1/completions,
POST /v1/embeddings, and three of our own: GET /v1/usage, GET /v1/backends and GET /v1/audit.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.

import asyncio
import logging
import math
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from ray import serve

from models._private.core import names
from models._private.core.errors import (
    BackendsUnavailableError,
    ModelNotFoundError,
    ModelOverloadedError,
    RequestError,
)
from models._private.core.retry import unwrap_error
from serve._private.ai.admission import RETRY_AFTER_MIN_S
from serve._private.ai.backends import RemoteBackend
from serve._private.ai.protocol import (
    ChatBody,
    CompletionBody,
    EmbeddingBody,
    encode_vector,
)
from serve._private.ai.serving import AIServing
from serve._private.auth.audit_route import install_audit_route
from serve._private.auth.key_table import key_of
from serve._private.auth.middleware import GuardMiddleware, ai_rule, allow, usable
from serve._private.auth.spending import reserve, settle
from serve._private.http_errors import error_response, install_error_handlers, request_id_of
from serve._private.tracing import TraceMiddleware

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


@app.exception_handler(ModelOverloadedError)
async def _overloaded(request: Request, exc: ModelOverloadedError) -> JSONResponse:
    # A 503 (the service is busy, not the caller over a limit of its own: that is a 429), at
    # once, with the hint the openai client and our agents wait for before they try again.
    response = error_response(503, str(exc), "service_unavailable", None, "model_overloaded", request)
    response.headers["retry-after"] = str(math.ceil(exc.retry_after_s or RETRY_AFTER_MIN_S))
    return response


app.add_middleware(GuardMiddleware, rule=ai_rule, service="ai")
app.add_middleware(TraceMiddleware, service="ai")  # added last: outermost, so refusals are traced too


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
class Gateway(AIServing):
    """Routes OpenAI-style requests to model deployments and remote providers.

    Args:
        config: The AIServiceConfig, dumped.
        models: Model name -> DeploymentHandle of its ModelServer.
        embedder: DeploymentHandle of the EmbeddingServer, or None.
        system: The system (Ray namespace) whose key authority checks requests (auth on).
    """

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
        return await self._answer(request, body, body.payload(), chat=True)

    @app.post("/v1/completions", responses=_STREAMED)
    async def completions(self, body: CompletionBody, request: Request) -> Any:
        payload = {"prompt": body.prompt, "params": body.params(16)}
        return await self._answer(request, body, payload, chat=False)

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
        reservation = (body.model, worst, 0, price.cost_microusd(worst, 0))
        out = await self._reserved(request, body, taken, reservation, self.embedder.embed.remote(texts))
        used = 0 if out.get("too_long") else sum(out["tokens"])
        cost = price.cost_microusd(used, 0)

        async def charge() -> None:  # to its end, even if the client leaves meanwhile
            await settle(request, "ai", taken, used, cost)
            if not out.get("too_long"):
                self._account(request, body, body.model, used, 0, cost)

        await asyncio.shield(asyncio.ensure_future(charge()))
        if out.get("too_long"):  # refused, as OpenAI does, rather than cut and counted whole
            i, n = out["too_long"][0]
            raise RequestError(
                "input" if isinstance(body.input, str) else f"input.{i}",
                f"is {n} tokens long; {body.model} reads at most {out['max_tokens']} tokens of a "
                "text and would drop the rest: split it",
                code="context_length_exceeded",
            )
        tokens = sum(out["tokens"])
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
        await self.usage.send()
        key = key_of(request)
        own = key.id if key is not None and "admin" not in key.scopes else None  # its row only
        try:
            ledger = await self.usage.ledger()
            rows = await ledger.usage_totals.remote(["key", "model"], since, own)
        except Exception as e:
            self.usage.forget_ledger()
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
