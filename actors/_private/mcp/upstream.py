"""Clients of remote MCP servers (upstreams), behind one small interface the `Federation` uses:
`Upstream`. `ClientUpstream` holds one persistent SDK `mcp.Client` to a server (Streamable HTTP,
stdio, or an in-process server in tests), reconnects it when the connection ends (for stdio:
runs the process again) with backoff, and tells the federation when the server's tools change."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import mcp_types as types

from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from models._private.core.tool_results import tool_error
from models._private.core.uris import redact_uri

__all__ = [
    "ClientUpstream",
    "ToolListing",
    "Upstream",
    "UpstreamDown",
    "http_upstream",
    "stdio_parameters",
    "stdio_upstream",
]

log = logging.getLogger(__name__)

BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 10.0)  # between reconnections (a stdio process run again)
_GONE = (types.CONNECTION_CLOSED,)  # MCPError codes that mean the connection itself ended
_CALLERS_FAULT = (types.INVALID_PARAMS, types.METHOD_NOT_FOUND, types.INVALID_REQUEST)


@dataclass
class ToolListing:
    """One full tools/list of an upstream: each tool's JSON (camelCase, as on the wire) and the
    caching hints it came with (`ttl_ms` None when the upstream gave none)."""

    tools: list[dict[str, Any]]
    ttl_ms: int | None = None
    cache_scope: str | None = None


class UpstreamDown(Exception):
    """An upstream could not be reached, or its connection ended during a call (internal: the
    federation turns it into a breaker failure and, maybe, a fallback). `sent`: whether the
    request had gone out (the tool may have run)."""

    def __init__(self, reason: str, sent: bool = False):
        super().__init__(reason)
        self.sent = sent

    def __reduce__(self):  # crosses Ray from a stdio actor with `sent`
        return (UpstreamDown, (str(self), self.sent))


class Upstream(Protocol):
    """What the federation needs of an upstream, whatever carries it (an SDK client here, a Ray
    actor that runs a stdio process elsewhere). Results are JSON dicts, as on the wire."""

    name: str
    kind: str

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    def on_list_changed(self, callback: Callable[[], Awaitable[None]]) -> None: ...
    async def list_tools(self) -> ToolListing: ...
    async def call_tool(self, name: str, arguments: dict[str, Any], timeout_s: float) -> dict[str, Any]: ...
    async def list_resources(self) -> dict[str, Any]: ...
    async def read_resource(self, uri: str) -> dict[str, Any]: ...
    async def list_prompts(self) -> dict[str, Any]: ...
    async def get_prompt(self, name: str, arguments: dict[str, str] | None) -> dict[str, Any]: ...
    async def complete(
        self, ref: dict[str, Any], argument: dict[str, str], context_arguments: dict[str, str] | None
    ) -> dict[str, Any]: ...
    def status(self) -> dict[str, Any]: ...


def _json(result: Any) -> dict[str, Any]:
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


class ClientUpstream:
    """One upstream through one persistent SDK `mcp.Client`, kept connected by a task.

    `target` makes what the `Client` connects to, anew at each connection (a URL's transport, a
    `StdioServerParameters`, an in-process `Server`). When the connection ends (the stdio
    process exited, the server went away) the task connects again after 0.5, 1, 2 ... 10 s,
    counting `restarts`; calls in between wait for it within their own deadline. Tool-list
    changes arrive on a `subscriptions/listen` stream (2026-07-28) or as
    `notifications/tools/list_changed` (2025-11-25) and call the `on_list_changed` callback.
    """

    def __init__(self, name: str, kind: str, target: Callable[[], Any], mode: str = "auto"):
        self.name = name
        self.kind = kind
        self._target = target
        self._mode = mode
        self._client: Client | None = None
        self._ready = asyncio.Event()
        self._lost = asyncio.Event()
        self._attempt_failed = asyncio.Event()  # set (and replaced) when a connection attempt fails
        self._closing = False
        self._runner: asyncio.Task | None = None
        self._callback: Callable[[], Awaitable[None]] | None = None
        self.connections = 0
        self.restarts = 0
        self.last_error: str | None = None
        self.protocol_version: str | None = None
        self.url: str | None = None  # an HTTP upstream's, kept out of errors and logs as it is

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, wait_s: float | None = None) -> None:
        """Starts connecting (at once); with `wait_s`, waits that long for the first connection."""
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(
                self._run(), name=f"mcp-upstream-{self.name}"
            )
        if wait_s is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ready.wait(), wait_s)

    async def close(self) -> None:
        """Closes the connection (a stdio process ends) and stops reconnecting."""
        self._closing = True
        self._lost.set()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner

    def on_list_changed(self, callback: Callable[[], Awaitable[None]]) -> None:
        """`callback` is awaited whenever the upstream says its tools changed (and after a
        reconnection, when they may have)."""
        self._callback = callback

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    def status(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "protocol_version": self.protocol_version,
        }

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            self._lost = asyncio.Event()
            connections = self.connections
            try:
                async with Client(
                    self._target(),
                    mode=self._mode,
                    message_handler=self._on_message,
                    elicitation_callback=_decline,
                    cache=None,
                ) as client:
                    self._client = client
                    self.protocol_version = client.protocol_version
                    self.connections += 1
                    if self.connections > 1:
                        self.restarts += 1
                    attempt = 0
                    self._ready.set()
                    if self.connections > 1:
                        await self._changed()
                    await self._hold(client)
            except asyncio.CancelledError:
                raise
            except BaseException as e:  # an anyio ExceptionGroup, an OSError: all mean "gone"
                self.last_error = self._scrub(_describe(e))
                log.warning("MCP upstream %s: connection ended: %s", self.name, self.last_error)
                if connections == self.connections:  # this attempt never connected
                    failed, self._attempt_failed = self._attempt_failed, asyncio.Event()
                    failed.set()
            finally:
                self._ready.clear()
                self._client = None
            if self._closing:
                return
            await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
            attempt += 1

    def _scrub(self, text: str) -> str:
        """`text` with the upstream's URL redacted (its user information and query values)."""
        return text.replace(self.url, redact_uri(self.url)) if self.url else text

    async def _hold(self, client: Client) -> None:
        """Keeps the connection until it is lost; listens for tool changes where the server can."""
        if client.protocol_version >= "2026":
            try:
                async with client.listen(tools_list_changed=True) as sub:
                    if sub.honored.tools_list_changed:
                        await self._until_lost(self._listen(sub))
            except MCPError as e:
                if e.code in _GONE:
                    raise
                # The server does not listen: hold without it (changes come with the ttl).
        await self._lost.wait()

    async def _until_lost(self, listening: Awaitable[None]) -> None:
        listener = asyncio.ensure_future(listening)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({listener, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            listener.cancel()
            lost.cancel()
        if listener.done() and not listener.cancelled() and listener.exception() is not None:
            raise listener.exception()  # the stream dropped: the connection is gone

    async def _listen(self, sub: Any) -> None:
        async for _event in sub:
            await self._changed()
        # A graceful end of the stream (the server stopped listening): hold without it.
        await self._lost.wait()

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            await self._changed()

    async def _changed(self) -> None:
        if self._callback is not None:
            try:
                await self._callback()
            except Exception:  # a refresh that failed is retried at the next change or ttl
                log.exception("MCP upstream %s: list-changed callback failed", self.name)

    # -- calls ----------------------------------------------------------------------------------

    async def _connected(self, timeout_s: float) -> Client:
        if self._runner is None:
            await self.start()
        client = self._client
        if client is None or not self._ready.is_set():
            # Waits for the next connection attempt, not out the whole timeout: an upstream that
            # cannot connect fails the call when its attempt fails.
            ready = asyncio.ensure_future(self._ready.wait())
            failed = asyncio.ensure_future(self._attempt_failed.wait())
            try:
                await asyncio.wait({ready, failed}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ready.cancel()
                failed.cancel()
            if not self._ready.is_set():
                raise UpstreamDown(f"not connected ({self.last_error or 'connecting'})")
            client = self._client
            if client is None:
                raise UpstreamDown(f"not connected ({self.last_error or 'connecting'})")
        return client

    async def _request(self, timeout_s: float, call: Callable[[Client], Awaitable[Any]]) -> Any:
        started = time.monotonic()
        client = await self._connected(timeout_s)
        remaining = max(timeout_s - (time.monotonic() - started), 0.001)
        try:
            return await asyncio.wait_for(call(client), remaining)
        except MCPError as e:
            if e.code in _GONE:
                if self._client is client:  # later calls wait for the next connection
                    self._ready.clear()
                    self._client = None
                self._lost.set()
                raise UpstreamDown(f"connection closed: {e}", sent=True) from e
            raise

    async def list_tools(self, timeout_s: float = 30.0) -> ToolListing:
        async def walk(client: Client) -> ToolListing:
            tools: list[dict[str, Any]] = []
            cursor = None
            ttl_ms = scope = None
            for _ in range(100):  # a paginator that never ends cannot hang the federation
                page = await client.list_tools(cursor=cursor, cache_mode="bypass")
                if cursor is None:
                    ttl_ms, scope = getattr(page, "ttl_ms", None), getattr(page, "cache_scope", None)
                tools += [_json(t) for t in page.tools]
                cursor = page.next_cursor
                if cursor is None:
                    break
            return ToolListing(tools, ttl_ms, scope)

        return await self._request(timeout_s, walk)

    async def call_tool(self, name: str, arguments: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        try:
            return _json(await self._request(timeout_s, lambda c: c.call_tool(name, arguments)))
        except MCPError as e:
            if e.code not in _CALLERS_FAULT:
                raise
            # The server refused this call's input (an unknown tool, bad arguments): an answer for
            # the caller to act on, as the spec asks tool errors to be, not a failing server.
            return tool_error(e.message)

    async def list_resources(self, timeout_s: float = 30.0) -> dict[str, Any]:
        return _json(await self._request(timeout_s, lambda c: c.list_resources(cache_mode="bypass")))

    async def read_resource(self, uri: str, timeout_s: float = 30.0) -> dict[str, Any]:
        return _json(await self._request(timeout_s, lambda c: c.read_resource(uri, cache_mode="bypass")))

    async def list_prompts(self, timeout_s: float = 30.0) -> dict[str, Any]:
        return _json(await self._request(timeout_s, lambda c: c.list_prompts(cache_mode="bypass")))

    async def get_prompt(
        self, name: str, arguments: dict[str, str] | None, timeout_s: float = 30.0
    ) -> dict[str, Any]:
        return _json(await self._request(timeout_s, lambda c: c.get_prompt(name, arguments)))

    async def complete(
        self,
        ref: dict[str, Any],
        argument: dict[str, str],
        context_arguments: dict[str, str] | None,
        timeout_s: float = 30.0,
    ) -> dict[str, Any]:
        model = types.PromptReference if ref.get("type") == "ref/prompt" else types.ResourceTemplateReference
        parsed = model.model_validate(ref)
        return _json(
            await self._request(timeout_s, lambda c: c.complete(parsed, argument, context_arguments))
        )


async def _decline(context: Any, params: Any) -> types.ElicitResult:
    """An upstream that asks for input mid-call is declined: a federated call has no user at hand
    to ask (the tool may then answer without, or say it cannot)."""
    return types.ElicitResult(action="decline")


def _describe(e: BaseException) -> str:
    while len(getattr(e, "exceptions", ())) == 1:  # an exception group of one
        e = e.exceptions[0]
    return f"{type(e).__name__}: {e}"


def http_upstream(
    name: str, url: str, headers_from_env: dict[str, str] | None = None, mode: str = "auto"
) -> ClientUpstream:
    """An upstream over Streamable HTTP; each header's value is read from the named environment
    variable of this process at each connection (never a caller's key). `mode` is the SDK
    client's: "auto" (2026-07-28 `server/discover`, else the 2025-11-25 `initialize`), "legacy",
    or a protocol version."""
    import httpx2

    def target() -> Any:
        headers = {}
        for header, var in (headers_from_env or {}).items():
            value = os.environ.get(var)
            if value is None:
                raise UpstreamDown(f"the environment variable {var} (header {header}) is not set")
            headers[header] = value
        return _http_transport(url, headers)

    @contextlib.asynccontextmanager
    async def _http_transport(url: str, headers: dict[str, str]) -> Any:
        # The SDK leaves a client it was given open: each connection closes its own.
        # The client's own timeouts stay generous: the federation bounds each call itself.
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
            streamable_http_client(url, http_client=http) as streams,
        ):
            yield streams

    upstream = ClientUpstream(name, "http", target, mode)
    upstream.url = url
    return upstream


def stdio_parameters(
    command: list[str], env: dict[str, str] | None = None, env_from: dict[str, str] | None = None
) -> StdioServerParameters:
    """The SDK's parameters to run `command`: the SDK's safe default environment plus `env` and,
    for each child variable of `env_from`, the value of the named variable of this process."""
    from mcp.client.stdio import get_default_environment

    child = get_default_environment()
    child.update(env or {})
    for var, source in (env_from or {}).items():
        if source in os.environ:
            child[var] = os.environ[source]
    argv = list(command)
    if argv[0] == "python":  # the interpreter this process runs, as the example config means it
        argv[0] = sys.executable
    return StdioServerParameters(command=argv[0], args=argv[1:], env=child)


def stdio_upstream(
    name: str, command: list[str], env: dict[str, str] | None = None, env_from: dict[str, str] | None = None
) -> ClientUpstream:
    """An upstream run as a process here, over stdio; run again when it exits."""
    params = stdio_parameters(command, env, env_from)
    return ClientUpstream(name, "stdio", lambda: params)
