"""The check every request of both services passes: key, scope, namespace or model, and the
audit record of what happened.

`GuardMiddleware` is an ASGI middleware on each service's FastAPI app. Per request it:
1. takes the request's id from Serve (its `x-request-id`, also in the response) for the audit,
   and refuses a body over MAX_BODY_BYTES by its Content-Length, unread, or (chunked) as soon
   as the bytes received pass it (413);
2. finds the route's scope in the service's rule (`None`: open, the health check);
3. authenticates the bearer key against this replica's copy of the key table (401
   `invalid_api_key` when missing, unknown, revoked or expired), checks the scope and a
   namespace in the path (403 `insufficient_permissions`), and spends one of the key's requests
   per minute (429 `rate_limit_exceeded` with Retry-After);
4. hands the key to the route (`request.state.key`) for the checks that need the body (a
   model, the namespaces of a search), which call `allow`;
5. appends the audit record when the response starts: before the response goes out for a write
   (durable), group-committed for a read or an inference; and, for a request that raised (the
   500 Starlette's outermost middleware sends past this one) or whose client went away (Serve
   cancels it: status 499), as the exception passes, durably for a write, whose commit may be
   done (the append shielded from the cancellation). A refusal's record is sampled
   (`AuditLog.refused`) and a path is kept to MAX_AUDIT_ROUTE characters, so that requests
   without a key write a bounded log. While no record can be written (a full disk), a write is
   refused with 503 `audit_unavailable` before it is done (one found out after it is done is
   answered 503 too, never a silent success), and a read goes on, its lost record logged.
   Its `kind` is "refused" for every refusal of the key (401, 403 and 429, here or in the
   route, with the error's `code`; a revoked or expired key named by its id, with its
   `key_state`), "request" for the rest.

The key table is a copy of the authority's (`key_table`), so a request asks nobody.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from models._private.core.errors import AccessDenied, AuditUnavailableError, Limited
from serve._private.auth.config import AuthConfig
from serve._private.auth.key_table import KeyTableReplica, install_key_table, key_of, key_table_of
from serve._private.auth.keys import KeyRecord, denial
from serve._private.http_errors import error_body
from serve._private.metrics import ServiceMetrics, service_metrics

__all__ = [
    "MAX_AUDIT_ROUTE",
    "MAX_BODY_BYTES",
    "MCP_METADATA_PATH",
    "UNROUTED",
    "GuardMiddleware",
    "Rule",
    "ai_rule",
    "allow",
    "facts_rule",
    "install_guard",
    "mcp_rule",
    "usable",
]

log = logging.getLogger("swarmray.serve")
# (method, path below the route prefix) -> (scope or None when open, durable audit, namespace)
Rule = Callable[[str, str], tuple[str | None, bool, str | None]]
_NAMESPACE = re.compile(r"^/v1/namespaces/([^/]+)")
# Largest request body either service reads: a facts batch of max_batch_documents (10,000 by
# default) paragraphs of about a kilobyte each fits with room to spare.
MAX_BODY_BYTES = 32 * 2**20
_METRICS: dict[str, ServiceMetrics] = {}  # service -> this replica's metrics
UNROUTED = "-"  # the route label of a request refused before routing, or matching no route
MAX_AUDIT_ROUTE = 256  # characters of a path an audit record keeps (the caller's to choose)
MAX_REQUEST_ID = 128  # characters of a request id it keeps (the header is the caller's too)
AUDIT_UNAVAILABLE = "audit_unavailable"  # the code of a write refused while no record can be written
CLIENT_CLOSED = 499  # the status a request's record has when its client went away unanswered


def allow(request: Any, *, model: str | None = None, namespace: str | None = None) -> None:
    """Raises AccessDenied if the request's key may not use `model` / `namespace` (no-op when
    auth is off). For the routes whose object is in the body."""
    record = key_of(request)
    # The audit record names what the request was about: a list when it was about several.
    target, before = model or namespace, getattr(request.state, "target", None)
    if before is not None and before != target:
        target = [*(before if isinstance(before, list) else [before]), target]
    request.state.target = target
    if record is not None and (why := denial(record, None, model=model, namespace=namespace)):
        raise AccessDenied(why)


def usable(request: Any, names: list[str], kind: Literal["model", "namespace"]) -> list[str]:
    """The models or namespaces of `names` the request's key may use (all when auth is off)."""
    record = key_of(request)
    return [n for n in names if record is None or not denial(record, None, **{kind: n})]


class GuardMiddleware:
    """See the module doc. The key table is looked up by service name (the replica installs it,
    `install_guard`), because the app is pickled into the replica before any table exists."""

    def __init__(self, app: Any, rule: Rule, service: str, challenge: Callable[[dict], str] | None = None):
        self.app, self.rule, self.service = app, rule, service
        self.challenge = challenge  # the WWW-Authenticate of a 401 from the request's scope; default "Bearer"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began, metrics = time.perf_counter(), _METRICS.get(self.service)
        headers = dict(scope["headers"])
        # Serve's own request id (it answers it in x-request-id and logs under it).
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:MAX_REQUEST_ID] or uuid.uuid4().hex

        def too_large() -> dict:  # built only for the rare request that needs it
            message = f"the request body is over {MAX_BODY_BYTES} bytes"
            return error_body(message, "invalid_request_error", "body", "request_too_large", request_id)

        if int(headers.get(b"content-length", b"0") or 0) > MAX_BODY_BYTES:  # refused unread
            if metrics is not None:
                metrics.answered(UNROUTED, scope["method"], 413, time.perf_counter() - began)
            return await _respond(send, 413, too_large())
        guard = key_table_of(self.service)
        path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
        needed, durable, namespace = self.rule(scope["method"], path)
        state = scope.setdefault("state", {})
        record = None
        if guard is not None and needed is not None:
            await guard.ready()
            presented, key_state = guard.identify(headers.get(b"authorization", b"").decode("latin-1"))
            record = presented if key_state == "live" else None
            refusal, retry_after = None, None
            if record is None:
                refusal = (401, "a valid API key is required (Authorization: Bearer sr-…)", "invalid_api_key")
            elif why := denial(record, needed, namespace=namespace):
                refusal = (403, why, "insufficient_permissions")
            else:
                try:
                    await guard.spender.take(record, "requests", 1)
                except Limited as e:
                    refusal, retry_after = (429, str(e), e.code), e.retry_after_s
            if refusal is not None:
                status, message, code = refusal
                if metrics is not None:
                    metrics.refused(record.id if record else None, code)
                    metrics.answered(UNROUTED, scope["method"], status, time.perf_counter() - began)
                kind = {401: "authentication_error", 403: "permission_error"}.get(status, "rate_limit_error")
                # A revoked or expired key is named by its id; an unknown one stays unknown.
                entry = _entry("refused", presented, scope, path, status, request_id, namespace, code=code)
                _refused(guard, {**entry, "key_state": key_state} if key_state != "live" else entry)
                body = error_body(message, kind, None, code, request_id)
                challenge = self.challenge(scope) if status == 401 and self.challenge is not None else None
                return await _respond(send, status, body, retry_after, challenge)
            state["key"] = record
            # A write is answered only after its record is on disk: while none can be written,
            # it is refused before it is done (reads go on, their records counted as lost).
            if durable and guard.audit.error is not None and not await asyncio.to_thread(guard.audit.recover):
                if metrics is not None:
                    metrics.refused(record.id, AUDIT_UNAVAILABLE)
                    metrics.answered(UNROUTED, scope["method"], 503, time.perf_counter() - began)
                entry = _entry(
                    "refused", record, scope, path, 503, request_id, namespace, code=AUDIT_UNAVAILABLE
                )
                _refused(guard, entry)
                message = "the audit log cannot be written now, and a write is done only with its record"
                body = error_body(message, "service_unavailable", None, AUDIT_UNAVAILABLE, request_id)
                return await _respond(send, 503, body)

        answered: list[int] = []  # the status whose record was appended, once
        pending: list[asyncio.Future] = []  # a durable append under way

        async def audit(status: int) -> None:
            # Once per request, whatever the outcome: answered, raised, or cancelled.
            if answered or guard is None or record is None:
                return
            answered.append(status)
            refused = state.get("refusal")  # the route refused the key: a model, a limit
            entry = _entry(
                "refused" if refused else "request",
                record,
                scope,
                path,
                status,
                request_id,
                state.get("target", namespace),
                code=refused,
                tokens=state.get("tokens"),
                cost_usd=state.get("cost_usd") or None,
                tool_calls=state.get("tool_calls"),  # how many; never their arguments
            )
            # A write's record is on disk before its answer, unless nothing was written (a
            # 4xx); a 5xx or a client gone (499) may follow a commit. Raises
            # AuditUnavailableError for a write only.
            if durable and not 400 <= status < 499:
                pending.append(asyncio.ensure_future(asyncio.to_thread(guard.audit.append, entry, True)))
                await asyncio.shield(pending[0])
            elif refused:
                _refused(guard, entry)
            else:
                try:
                    guard.audit.append(entry)
                except AuditUnavailableError as e:
                    log.error("request %s: its audit record is lost: %s", request_id, e)

        replaced: list[int] = []  # the route's answer, replaced by a 503: its record is not on disk

        # A body without a Content-Length (chunked) is counted as it arrives: past the cap, the
        # guard answers 413 and the app reads a disconnect, so no more of it is ever read.
        received, started, cut = 0, False, False

        async def receiving() -> dict:
            nonlocal received, cut
            if cut:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    if not started:
                        await _respond(sending, 413, too_large())
                    cut = True  # what the app answers to the disconnect goes nowhere
                    return {"type": "http.disconnect"}
            return message

        async def sending(message: dict) -> None:
            nonlocal started
            if cut or replaced:
                return
            started = True
            status = message.get("status", 0)
            if message["type"] == "http.response.start":
                try:
                    await audit(status)
                except AuditUnavailableError as e:
                    log.error(
                        "request %s: done, but its audit record is lost; answered 503: %s", request_id, e
                    )
                    replaced.append(status)
                    status = 503
                    why = "the write may be done, but its audit record could not be written"
                    body = error_body(why, "service_unavailable", None, AUDIT_UNAVAILABLE, request_id)
                    await _respond(send, 503, body)
            if message["type"] == "http.response.start" and metrics is not None:
                # The route's template (the router put it in the scope), not the path with ids.
                route = getattr(scope.get("route"), "path", None) or UNROUTED
                metrics.answered(route, scope["method"], status, time.perf_counter() - began)
                if status == 429:  # a route's own limit check: tokens or cost
                    metrics.refused(getattr(record, "id", None), state.get("refusal", "rate_limit_exceeded"))
                elif replaced:
                    metrics.refused(getattr(record, "id", None), AUDIT_UNAVAILABLE)
            if not replaced:
                await send(message)

        try:
            await self.app(scope, receiving, sending)
        except asyncio.CancelledError:  # the client went away (Serve cancels): the write may be done
            await asyncio.shield(_after(audit, pending, CLIENT_CLOSED, request_id))
            raise
        except Exception:  # answered 500 by Starlette's outermost middleware, past `sending`
            if cut:
                # The app failed on the disconnect it read (Starlette's ClientDisconnect): the 413
                # has been answered (and audited) already.
                return
            if not answered and metrics is not None:
                route = getattr(scope.get("route"), "path", None) or UNROUTED
                metrics.answered(route, scope["method"], 500, time.perf_counter() - began)
            await _after(audit, pending, 500, request_id)
            raise


async def _after(audit: Callable, pending: list[asyncio.Future], status: int, request_id: str) -> None:
    # The record of a request that raised or was cancelled: the append under way, or this one.
    try:
        if pending:
            await asyncio.shield(pending[0])
        await audit(status)
    except AuditUnavailableError as e:
        log.error("request %s (%d): its audit record is lost: %s", request_id, status, e)


def _refused(guard: KeyTableReplica, entry: dict[str, Any]) -> None:
    # A refusal's record, sampled (`AuditLog.refused`): what a caller without a key can write is
    # bounded; one that cannot be written is logged, never in the caller's way.
    try:
        guard.audit.refused(entry)
    except AuditUnavailableError as e:
        log.error("request %s: its refusal's audit record is lost: %s", entry["request_id"], e)


def _entry(
    kind: str,
    record: KeyRecord | None,
    scope: dict,
    path: str,
    status: int,
    request_id: str,
    target: str | None,
    **extra: Any,
) -> dict[str, Any]:
    # Never a body or a secret: who, what, on what, how it ended.
    return {
        "kind": kind,
        "key_id": record.id if record else None,
        "method": scope["method"],
        "route": path if len(path) <= MAX_AUDIT_ROUTE else path[:MAX_AUDIT_ROUTE] + "…",
        "target": target,
        "status": status,
        "request_id": request_id,
        **({"route_chars": len(path)} if len(path) > MAX_AUDIT_ROUTE else {}),
        **{k: v for k, v in extra.items() if v is not None},
    }


async def _respond(
    send: Any, status: int, body: dict, retry_after_s: float | None = None, challenge: str | None = None
) -> None:
    data = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", (challenge or "Bearer").encode("latin-1")))
    if retry_after_s is not None:
        headers.append((b"retry-after", str(math.ceil(retry_after_s)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def facts_rule(method: str, path: str) -> tuple[str | None, bool, str | None]:
    """The facts service: reads (and search) need facts:read, everything else facts:write and is
    audited durably; a namespace in the path is checked here."""
    match = _NAMESPACE.match(path)
    namespace = match.group(1) if match else None
    if path.rstrip("/") == "/v1/audit":
        return "admin", False, None
    if method in ("GET", "HEAD") or path == "/v1/search":
        return "facts:read", False, namespace
    return "facts:write", True, namespace


MCP_METADATA_PATH = "/.well-known/oauth-protected-resource"  # RFC 9728, under the endpoint's prefix


def mcp_rule(method: str, path: str) -> tuple[str | None, bool, str | None]:
    """The /mcp endpoint: its protected-resource metadata is open (a client reads it to learn how
    to authenticate); everything else needs mcp:call. Not durable: a call is a task the queen
    journals, and a read-only tool writes nothing."""
    if path.rstrip("/") == MCP_METADATA_PATH:
        return None, False, None
    return "mcp:call", False, None


AI_SCOPES = {
    "/v1/chat/completions": "ai:invoke",
    "/v1/completions": "ai:invoke",
    "/v1/models": "ai:invoke",
    "/v1/embeddings": "ai:embed",
    "/v1/usage": "usage:read",
    "/v1/backends": "admin",
    "/v1/audit": "admin",
}


def ai_rule(method: str, path: str) -> tuple[str | None, bool, str | None]:
    """The AI service: each route's scope by the table above; anything else needs admin (an
    unknown route is answered 404 only to a key that may see everything)."""
    return AI_SCOPES.get(path.rstrip("/"), "admin"), False, None


def install_guard(config: AuthConfig, system: str, service: str) -> None:
    """Turns the guard (and the requests' metrics) on in this replica (the middleware is on the
    app from import on)."""
    _METRICS[service] = service_metrics(system, service)
    if config.enabled:
        from ray import serve

        context = serve.get_replica_context()
        replica = getattr(getattr(context, "replica_id", None), "unique_id", None) or context.replica_tag
        install_key_table(service, KeyTableReplica(system, config, writer=f"{service}-{replica}"))
