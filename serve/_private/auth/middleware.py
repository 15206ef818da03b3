"""The check every request of both services passes: key, scope, namespace or model, and the
audit record of what happened.

`GuardMiddleware` is an ASGI middleware on each service's FastAPI app. Per request it:
1. takes the request's id from Serve (its `x-request-id`, also in the response) for the audit,
   and refuses a body over MAX_BODY_BYTES by its Content-Length, unread (413);
2. finds the route's scope in the service's rule (`None`: open, the health check);
3. authenticates the bearer key against this replica's copy of the key table (401
   `invalid_api_key` when missing, unknown, revoked or expired), checks the scope and a
   namespace in the path (403 `insufficient_permissions`), and spends one of the key's requests
   per minute (429 `rate_limit_exceeded` with Retry-After);
4. hands the key to the route (`request.state.key`) for the checks that need the body (a
   model, the namespaces of a search), which call `allow`;
5. appends the audit record when the response starts: before the response goes out for a write
   (durable), group-committed for a read or an inference. Its `kind` is "refused" for every
   refusal of the key (401, 403 and 429, here or in the route, with the error's `code`; a
   revoked or expired key named by its id, with its `key_state`), "request" for the rest.

The key table is a copy of the authority's, kept by a long poll (`KeyAuthority.changes`), so a
request asks nobody: the lookup is one dict access by the key's SHA-256.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from models._private.core.errors import AccessDenied, Limited
from serve._private.ai.protocol import error_body
from serve._private.auth.audit import AuditLog
from serve._private.auth.config import AuthConfig
from serve._private.auth.keys import KeyRecord, denial, hash_key
from serve._private.auth.quota import limit_of
from serve._private.metrics import ServiceMetrics, service_metrics

__all__ = [
    "MAX_BODY_BYTES",
    "Guard",
    "GuardMiddleware",
    "Rule",
    "Spender",
    "Taken",
    "ai_rule",
    "allow",
    "facts_rule",
    "guard_of",
    "install_guard",
    "key_of",
    "refunded_on_failure",
    "reserve",
    "settle",
    "token_limited",
    "usable",
]

log = logging.getLogger("swarmray.serve")
T = TypeVar("T")

# (method, path below the route prefix) -> (scope or None when open, durable audit, namespace)
Rule = Callable[[str, str], tuple[str | None, bool, str | None]]
KeyState = Literal["live", "revoked", "expired", "missing", "unknown"]
_NAMESPACE = re.compile(r"^/v1/namespaces/([^/]+)")
# Largest request body either service reads: a facts batch of max_batch_documents (10,000 by
# default) paragraphs of about a kilobyte each fits with room to spare.
MAX_BODY_BYTES = 32 * 2**20


_SKEW_S = 0.25  # a local lease is spent only until this long before its window ends


class _Lease:
    def __init__(self, window: int, end: float, free: int, tight: bool):
        self.window, self.end, self.free, self.tight = window, end, free, tight


class Spender:
    """This replica's leases of each key's limits (`quota` has the scheme).

    `take` returns the window its units came from, for `give_back` after the request.
    """

    def __init__(self, authority: Any):
        self.authority = authority
        self.leases: dict[tuple[str, str], _Lease] = {}
        self._asking: dict[tuple[str, str], asyncio.Lock] = {}

    def _local(self, slot: tuple[str, str], n: int) -> int | None:
        lease = self.leases.get(slot)
        if lease is not None and not lease.tight and lease.free >= n and time.time() < lease.end:
            lease.free -= n
            return lease.window
        return None

    async def take(self, record: KeyRecord, counter: str, n: int) -> int | None:
        """Spends `n` units, from the local lease or the authority; raises Limited."""
        if n <= 0 or limit_of(record, counter) is None:
            return None  # no such limit on this key, or nothing to spend
        slot = (record.id, counter)
        if (window := self._local(slot, n)) is not None:
            return window
        # One request of this key asks the authority at a time; the others wait and spend the
        # lease it brings. Otherwise a burst would lease once per request, and the surplus it
        # strands on one replica could be refused on another.
        async with self._asking.setdefault(slot, asyncio.Lock()):
            if (window := self._local(slot, n)) is not None:
                return window
            return await self._ask(record, counter, n)

    async def _ask(self, record: KeyRecord, counter: str, n: int) -> int:
        grant = await self.authority.acquire.remote(record.id, counter, n)
        if not grant["units"]:
            raise Limited(counter, grant["retry_after_s"])
        end = time.time() + grant["retry_after_s"] - _SKEW_S
        # Re-read after the await: other requests may have spent from or replaced the lease.
        current = self.leases.get((record.id, counter))
        carried = current.free if current is not None and current.window == grant["window"] else 0
        free = grant["units"] - n + carried
        tight = grant["tight"]
        self.leases[(record.id, counter)] = _Lease(grant["window"], end, 0 if tight else free, tight)
        if tight and free:  # exact from now on: hand back what this replica holds
            await self.authority.release.remote(record.id, counter, grant["window"], free)
        return grant["window"]

    async def overrun(self, record: KeyRecord, counter: str, n: int) -> None:
        """Spends `n` units a request used beyond its reservation, over the limit if need be:
        what was used is charged, never forgiven."""
        if n <= 0 or limit_of(record, counter) is None or self._local((record.id, counter), n) is not None:
            return
        log.warning("key %s used %d %s units beyond its reservation", record.id, n, counter)
        await self.authority.acquire.remote(record.id, counter, n, True)

    async def give_back(self, record: KeyRecord, counter: str, window: int | None, n: int) -> None:
        """Units taken for a worst case and not used (or a request that failed)."""
        if window is None or n <= 0:
            return
        lease = self.leases.get((record.id, counter))
        if lease is not None and lease.window == window and not lease.tight and time.time() < lease.end:
            lease.free += n
        else:
            await self.authority.release.remote(record.id, counter, window, n)


class Guard:
    """One replica's view of the keys, and its audit chain.

    Args:
        system: The system (Ray namespace) whose key authority to follow.
        config: The services' AuthConfig.
        writer: This replica's name in the audit log.
    """

    def __init__(self, system: str, config: AuthConfig, writer: str):
        self.system, self.config, self.writer = system, config, writer
        self.keys: dict[str, KeyRecord] = {}  # by hash of the secret
        self.version = -1
        self.audit: AuditLog | None = None
        self._ready: asyncio.Lock | None = None
        self._tasks: list[asyncio.Task] = []
        self.spender: Spender | None = None

    async def ready(self) -> None:
        """Loads the key table and the signing key once, then follows the authority."""
        if self.audit is not None:
            return
        self._ready = self._ready or asyncio.Lock()
        async with self._ready:
            if self.audit is not None:
                return
            import ray

            from models._private.core.names import authority_name

            authority = ray.get_actor(authority_name(self.system), namespace=self.system)
            self.spender = Spender(authority)
            self._apply(await authority.changes.remote(-1, 0))
            key = Ed25519PrivateKey.from_private_bytes(await authority.signing_key.remote())
            directory = await authority.audit_directory.remote()
            self.audit = self.config.audit_log(directory, self.writer, key)
            self._tasks = [
                asyncio.create_task(self._follow(authority)),
                asyncio.create_task(self._flush()),
                asyncio.create_task(self._witness(authority)),
            ]

    def _apply(self, table: dict[str, Any]) -> None:
        self.version = table["version"]
        self.keys = {r["hash"]: KeyRecord.model_validate(r) for r in table["keys"]}

    async def _follow(self, authority: Any) -> None:
        while True:
            try:
                self._apply(await authority.changes.remote(self.version, self.config.sync_timeout_s))
            except Exception as e:  # the authority restarting: keep the last table, ask again
                log.warning("key table sync failed: %r", e)
                await asyncio.sleep(self.config.sync_timeout_s)

    async def _flush(self) -> None:
        while True:  # group commit: nothing waits longer than the window for its fsync
            await asyncio.sleep(self.config.audit_commit_window_s)
            await asyncio.to_thread(self.audit.flush)

    async def _witness(self, authority: Any) -> None:
        # The authority keeps this chain's latest signed head, so that a cut in the file shows.
        reported = None
        while True:
            await asyncio.sleep(self.config.audit_checkpoint_s)
            head = await asyncio.to_thread(self.audit.checkpoint_if_new)
            if head is not None and head is not reported:
                try:
                    await authority.witnessed.remote(head)
                    reported = head
                except Exception as e:  # the authority restarting: send the next one
                    log.warning("audit head not witnessed: %r", e)

    def identify(self, authorization: str | None) -> tuple[KeyRecord | None, KeyState]:
        """The key a bearer header carries, live or not, and its state: "live", "revoked" or
        "expired" with its record; "missing" (no bearer header) or "unknown" (a secret no key
        has) with None. The table keeps revoked keys, so that their requests are audited by id."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None, "missing"
        record = self.keys.get(hash_key(authorization[7:].strip()))
        if record is None:
            return None, "unknown"
        if record.revoked_at is not None:
            return record, "revoked"
        return record, "live" if record.live(time.time()) else "expired"

    def authenticate(self, authorization: str | None) -> KeyRecord | None:
        """The live key a bearer header carries, or None."""
        record, state = self.identify(authorization)
        return record if state == "live" else None


def key_of(request: Any) -> KeyRecord | None:
    """The key a request came with (None when auth is off)."""
    return getattr(request.state, "key", None)


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


_GUARDS: dict[str, Guard] = {}  # service -> this process's guard (a replica is a process)
_METRICS: dict[str, ServiceMetrics] = {}  # service -> this replica's metrics
UNROUTED = "-"  # the route label of a request refused before routing, or matching no route


def guard_of(service: str) -> Guard | None:
    """This replica's guard of `service`, or None when auth is off."""
    return _GUARDS.get(service)


Taken = list[tuple[str, int | None, int]]  # (counter, window, units) a request holds


def _units(counter: str, tokens: int, cost_microusd: int) -> int:
    return cost_microusd if counter == "cost" else tokens


async def reserve(request: Any, service: str, tokens: int, cost_microusd: int = 0) -> Taken:
    """Takes a request's worst case, `tokens` from its key's tokens per minute and token
    budget and `cost_microusd` from its cost budget (nothing when auth is off or the key has no
    such limits); raises Limited."""
    record = key_of(request)
    guard = _GUARDS.get(service)
    taken: Taken = []
    if record is None or guard is None:
        return taken
    try:
        for counter in ("tokens", "budget", "cost"):
            n = _units(counter, tokens, cost_microusd)
            taken.append((counter, await guard.spender.take(record, counter, n), n))
    except Limited:
        await settle(request, service, taken)
        raise
    return taken


async def settle(request: Any, service: str, taken: Taken, tokens: int = 0, cost_microusd: int = 0) -> None:
    """Gives back what a request took beyond the `tokens` and cost it really used, and charges
    what it used beyond them."""
    if not taken:  # auth off, or a key without token or cost limits
        return
    record = key_of(request)
    spender = _GUARDS[service].spender
    for counter, window, units in taken:
        used = _units(counter, tokens, cost_microusd)
        await spender.give_back(record, counter, window, units - min(used, units))
        await spender.overrun(record, counter, used - units)


async def refunded_on_failure(request: Any, service: str, taken: Taken, work: Awaitable[T]) -> T:
    """`work`'s result; if it raises, everything `taken` goes back first."""
    try:
        return await work
    except BaseException:
        await settle(request, service, taken)
        raise


def token_limited(request: Any) -> bool:
    """Whether the request's key limits tokens or cost, so a request needs a worst case."""
    record = key_of(request)
    return record is not None and any(
        v is not None for v in (record.tpm, record.budget_tokens, record.budget_usd)
    )


class GuardMiddleware:
    """See the module doc. The guard is looked up by service name in this module (the replica
    installs it), because the app is pickled into the replica before any guard exists."""

    def __init__(self, app: Any, rule: Rule, service: str):
        self.app, self.rule, self.service = app, rule, service

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began, metrics = time.perf_counter(), _METRICS.get(self.service)
        headers = dict(scope["headers"])
        # Serve's own request id (it answers it in x-request-id and logs under it).
        request_id = headers.get(b"x-request-id", b"").decode("latin-1") or uuid.uuid4().hex
        if int(headers.get(b"content-length", b"0") or 0) > MAX_BODY_BYTES:  # refused unread
            if metrics is not None:
                metrics.answered(UNROUTED, scope["method"], 413, time.perf_counter() - began)
            message = f"the request body is over {MAX_BODY_BYTES} bytes"
            body = error_body(message, "invalid_request_error", "body", "request_too_large", request_id)
            return await _respond(send, 413, body)
        guard = _GUARDS.get(self.service)
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
                guard.audit.append({**entry, "key_state": key_state} if key_state != "live" else entry)
                body = error_body(message, kind, None, code, request_id)
                return await _respond(send, status, body, retry_after)
            state["key"] = record

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start" and metrics is not None:
                # The route's template (the router put it in the scope), not the path with ids.
                route = getattr(scope.get("route"), "path", None) or UNROUTED
                metrics.answered(route, scope["method"], message["status"], time.perf_counter() - began)
                if message["status"] == 429:  # a route's own limit check: tokens or cost
                    metrics.refused(getattr(record, "id", None), state.get("refusal", "rate_limit_exceeded"))
            if message["type"] == "http.response.start" and guard is not None and record is not None:
                refused = state.get("refusal")  # the route refused the key: a model, a limit
                entry = _entry(
                    "refused" if refused else "request",
                    record,
                    scope,
                    path,
                    message["status"],
                    request_id,
                    state.get("target", namespace),
                    code=refused,
                    tokens=state.get("tokens"),
                    cost_usd=state.get("cost_usd") or None,
                )
                if durable and message["status"] < 400:
                    await asyncio.to_thread(guard.audit.append, entry, True)
                else:
                    guard.audit.append(entry)
            await send(message)

        await self.app(scope, receive, sending)


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
        "route": path,
        "target": target,
        "status": status,
        "request_id": request_id,
        **{k: v for k, v in extra.items() if v is not None},
    }


async def _respond(send: Any, status: int, body: dict, retry_after_s: float | None = None) -> None:
    data = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
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
        _GUARDS[service] = Guard(system, config, writer=f"{service}-{replica}")
