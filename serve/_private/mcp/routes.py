"""The /mcp endpoint's ingress: a plain ASGI app built in each replica (`__serve_build_asgi_app__`),
so that nothing of the SDK is pickled and the app's own lifespan, which Serve runs, starts the
SDK's session manager (a sub-app mounted in a FastAPI app would never see its lifespan).

Per HTTP request, in this order (all of it in a server span, `TraceMiddleware`, when tracing is on):
1. Host and Origin (`host_allowed`, `origin_allowed`): 421 and 403, before any key is looked at,
   so that a DNS-rebinding page learns nothing, not even whether a key is needed;
2. the guard (`GuardMiddleware` with `mcp_rule`): the key, scope `mcp:call`, the key's requests
   per minute, and the audit record; a 401 names the protected-resource metadata
   (`WWW-Authenticate: Bearer resource_metadata="…"`, RFC 9728), which is served open;
3. the JSON-RPC method and tool name are read from the body for the audit record's `target`
   (never the arguments or the result), and the request goes to the SDK's session manager,
   stateless: any replica answers any request, on spec revision 2026-07-28 (one POST per
   request, headers checked against the body, -32020) and 2025-11-25 (initialize and then any
   request, no session id kept).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from ray import serve

from models._private.core import tracing
from models._private.core.names import MCP_INGRESS_DEPLOYMENT
from serve._private.auth.middleware import MCP_METADATA_PATH, GuardMiddleware, install_guard, mcp_rule
from serve._private.mcp.config import McpServiceConfig
from serve._private.mcp.serving import McpBackend, build_server
from serve._private.mcp.tools import host_allowed, origin_allowed
from serve._private.mcp.usage import McpUsage
from serve._private.tracing import TraceMiddleware, install_tracing

__all__ = ["McpEndpoint", "McpGateway", "resource_url"]

log = logging.getLogger("swarmray.serve")
SERVICE = "mcp"  # the guard's and the metrics' service name


def _route_path(scope: dict) -> str:
    path, root = scope["path"], scope.get("root_path", "")
    return (path[len(root) :] if root and path.startswith(root) else path) or "/"


def resource_url(scope: dict) -> str:
    """The endpoint's URL as the client reached it (RFC 9728's `resource`)."""
    headers = dict(scope["headers"])
    host = headers.get(b"host", b"").decode("latin-1") or "localhost"
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}"


def _challenge(scope: dict) -> str:
    return f'Bearer resource_metadata="{resource_url(scope)}{MCP_METADATA_PATH}", scope="mcp:call"'


async def _plain(send: Any, status: int, body: dict | str, headers: list | None = None) -> None:
    data = (json.dumps(body) if isinstance(body, dict) else body).encode()
    kind = b"application/json" if isinstance(body, dict) else b"text/plain; charset=utf-8"
    head = [(b"content-type", kind), (b"content-length", str(len(data)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": data})


def _target(body: bytes) -> str | None:
    # "tools/call math.factorize": what the audit record says the request was about.
    try:
        message = json.loads(body)
    except ValueError:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return None
    params = message.get("params")
    name = params.get("name") if isinstance(params, dict) else None
    return f"{message['method']} {name}"[:200] if isinstance(name, str) else message["method"][:200]


class McpEndpoint:
    """The ASGI app of one replica (see the module doc).

    Args:
        config: The endpoint's config.
        system: The system's Ray namespace.
    """

    def __init__(self, config: McpServiceConfig, system: str):
        self.config, self.system = config, system
        self.backend = McpBackend(config, system)
        self.server = build_server(self.backend)
        self.usage = McpUsage(system)
        self.manager = self._new_manager()
        self.guarded = GuardMiddleware(self._route, rule=mcp_rule, service=SERVICE, challenge=_challenge)
        # Outermost, as on the other services: a request refused (421, 403, 401) is traced too.
        self.traced = TraceMiddleware(self._checked, service=SERVICE)
        self._running: asyncio.Task | None = None
        self._stop = asyncio.Event()
        self._started = asyncio.Event()

    def _new_manager(self) -> Any:
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
        from mcp.server.transport_security import TransportSecuritySettings

        # Host and Origin are checked before the guard (above); the SDK's own check would only
        # repeat it after the key, so it is off here (it still checks Content-Type).
        return StreamableHTTPSessionManager(
            self.server,
            stateless=True,
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            max_request_body_size=4 * 2**20,
        )

    async def start(self) -> None:
        """Runs the session manager and waits until it serves. Once running this is a no-op; a
        manager whose task ended (it crashed, or was cancelled) is replaced by a new one, as a
        manager runs only once, so that one failure does not refuse every later request."""
        if self._running is not None and self._running.done() and not self._stop.is_set():
            why = "cancelled" if self._running.cancelled() else repr(self._running.exception())
            log.warning("mcp: the session manager stopped (%s); starting a new one", why)
            self.manager, self._started, self._running = self._new_manager(), asyncio.Event(), None
        if self._running is None:

            async def run() -> None:
                async with self.manager.run():
                    self._started.set()
                    await self._stop.wait()

            self._running = asyncio.create_task(run())
        waiter = asyncio.ensure_future(self._started.wait())
        done, _ = await asyncio.wait({waiter, self._running}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            self._running.result()  # raises what stopped it

    async def stop(self) -> None:
        """Stops the session manager (the replica is going away)."""
        self._stop.set()
        try:  # what this replica counted and has not sent goes now, with one try
            await asyncio.wait_for(self.usage.send(), 5.0)
        except Exception as e:
            log.warning("mcp usage not sent at shutdown: %r", e)
        if self._running is not None:
            await asyncio.gather(self._running, return_exceptions=True)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] == "http":
            await self.traced(scope, receive, send)

    async def _checked(self, scope: dict, receive: Any, send: Any) -> None:
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        if not host_allowed(host, [self.config.host], self.config.allowed_hosts):
            return await _plain(send, 421, f"Invalid Host header: {host!r} is not this server")
        origin = headers.get(b"origin", b"").decode("latin-1") or None
        if not origin_allowed(origin, self.config.allowed_origins):
            return await _plain(send, 403, f"Invalid Origin header: {origin!r} may not call this server")
        await self.guarded(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as e:
                    await send({"type": "lifespan.startup.failed", "message": repr(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, scope: dict, receive: Any, send: Any) -> None:
        path = _route_path(scope)
        if path.rstrip("/") == MCP_METADATA_PATH:
            if scope["method"] not in ("GET", "HEAD"):
                return await _plain(send, 405, {"error": "method not allowed"}, [(b"allow", b"GET")])
            return await _plain(send, 200, self.metadata(scope))
        if path != "/":
            return await _plain(send, 404, {"error": f"no such path {path!r}; the endpoint is at /"})
        if scope["method"] != "POST":
            # Stateless: no standalone stream to GET (it would hold a request slot for nothing)
            # and no session to DELETE; the spec lets a server answer both 405.
            why = {"error": f"{scope['method']} is not served: each request is one POST (stateless)"}
            return await _plain(send, 405, why, [(b"allow", b"POST")])
        try:
            await self.start()  # a no-op once running (the lifespan started it)
        except Exception as e:  # the next request tries a new manager again
            log.warning("mcp: the session manager does not start: %r", e)
            error = {"code": -32603, "message": f"the MCP endpoint cannot serve now: {type(e).__name__}: {e}"}
            return await _plain(send, 503, {"jsonrpc": "2.0", "id": None, "error": error})
        receive = await self._noted(scope, receive)
        if tracing.enabled():  # the server span, for the tool calls' spans (`McpBackend.call`)
            scope.setdefault("state", {})["trace"] = tracing.carrier()
        # Counted per key when the SDK gets it (the answer's end may never be seen here: a client
        # that leaves cancels this task); with auth off (loopback only) there is no key to count.
        if (key := scope.get("state", {}).get("key")) is not None:
            self.usage.count(key.id)
        await self.manager.handle_request(scope, receive, send)

    async def _noted(self, scope: dict, receive: Any) -> Any:
        # Reads the body (the guard bounds it) to put its method and tool in the audit record,
        # then replays it to the SDK.
        chunks, more, last = [], True, None
        while more:
            message = await receive()
            if message["type"] != "http.request":
                last = message
                break
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if (target := _target(body)) is not None:
            scope.setdefault("state", {})["target"] = target
        replay = [{"type": "http.request", "body": body, "more_body": False}]
        if last is not None:
            replay.append(last)

        async def replayed() -> dict:
            return replay.pop(0) if replay else await receive()

        return replayed

    def metadata(self, scope: dict) -> dict[str, Any]:
        """The protected-resource metadata (RFC 9728): what the resource is and how to present a
        key. swarmray's keys are made by `swarm keys create`, not by an OAuth server, so none is
        named (`authorization_servers` is optional)."""
        return {
            "resource": resource_url(scope),
            "bearer_methods_supported": ["header"],
            "scopes_supported": ["mcp:call"],
            "resource_name": "swarmray MCP endpoint",
            "resource_documentation": "Create a key with: swarm keys create --name NAME --scopes mcp:call",
        }


@serve.deployment(name=MCP_INGRESS_DEPLOYMENT, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class McpGateway:
    """The /mcp endpoint's ingress deployment: its ASGI app (`McpEndpoint`) is built in each
    replica, after the constructor.

    Args:
        config: The McpServiceConfig, dumped.
        system: The system (Ray namespace) whose registry, queens and key authority it uses.
    """

    def __init__(self, config: dict[str, Any], system: str):
        self.config = McpServiceConfig.model_validate(config)
        self.system = system
        install_guard(self.config.auth, system, SERVICE)
        install_tracing(self.config.tracing, system, SERVICE)

    def __serve_build_asgi_app__(self) -> McpEndpoint:
        return McpEndpoint(self.config, self.system)
