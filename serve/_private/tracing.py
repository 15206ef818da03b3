"""The services' side of a task's trace: a server span per HTTP request, nested in the caller's
span when the request carries a W3C `traceparent` (an agent's call does).

`TraceMiddleware` sits on each service's app from import on, outermost, and does nothing but
one check until `install_tracing` turns tracing on in the replica (as `install_guard` turns
the key guard on), so that a service deployed without tracing pays nothing for it.
"""

from __future__ import annotations

from typing import Any

from models._private.core import tracing
from models._private.core.tracing import TracingConfig

__all__ = ["TraceMiddleware", "install_tracing"]

_CARRIED = (b"traceparent", b"tracestate")  # the W3C headers a caller's context comes in


def install_tracing(config: TracingConfig, system: str, service: str) -> None:
    """Turns tracing on in this replica as `config` says (once per process; see
    `tracing.configure`), its spans' service `swarmray.<service>`. Without an endpoint, the
    replica's own OTEL_EXPORTER_OTLP_ENDPOINT counts (a Serve config file's `runtime_env`);
    `swarm up` has resolved the endpoint already."""
    tracing.configure(config.resolved(), f"swarmray.{service}", system)


class TraceMiddleware:
    """ASGI middleware: each HTTP request in a SERVER span, `http.server <method> <path>`, with
    its status code, under the request's `traceparent` (a new trace without one).

    Args:
        app: The ASGI app it wraps.
        service: The service's name, an attribute of every span (`swarmray.service`).
    """

    def __init__(self, app: Any, service: str):
        self.app = app
        self.service = service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not tracing.enabled():
            await self.app(scope, receive, send)
            return
        parent = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _CARRIED}
        method, path = scope["method"], scope["path"]
        attributes = {"http.request.method": method, "url.path": path, "swarmray.service": self.service}
        with tracing.span(f"http.server {method} {path}", parent, "server", attributes=attributes) as span:

            async def sent(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                await send(message)

            await self.app(scope, receive, sent)
