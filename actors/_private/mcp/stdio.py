"""stdio upstreams under supervision: `McpStdioServer`, the Ray actor that runs one MCP server
process (named `mcp-stdio:<server>`; run again with backoff when it exits), and
`StdioActorUpstream`, the federation's `Upstream` that calls it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from actors._private.mcp.config import McpServerConfig
from actors._private.mcp.upstream import ClientUpstream, ToolListing, UpstreamDown, stdio_upstream
from models._private.core import names
from models._private.core.retry import unwrap_error

__all__ = ["McpStdioServer", "StdioActorUpstream"]

log = logging.getLogger(__name__)


class McpStdioServer:
    """Runs one stdio MCP server (an async Ray actor; `swarm up` creates it with
    max_restarts=-1, max_task_retries=0). The process starts at the first call, and is run
    again whenever it exits (after 0.5, 1, 2 ... 10 s; `status()['restarts']` counts). When the
    server's tools change, it asks the federation actor to relist them."""

    def __init__(self, name: str, config: dict[str, Any], ray_namespace: str):
        self.name = name
        self.ray_namespace = ray_namespace
        self.config = McpServerConfig.model_validate(config)
        if self.config.command is None:
            raise ValueError(f"MCP server {name!r} has no command: it is not a stdio upstream")
        self.upstream: ClientUpstream = stdio_upstream(
            name, self.config.command, self.config.env, self.config.env_from
        )
        self.upstream.on_list_changed(self._tell_federation)

    async def _started(self) -> ClientUpstream:
        await self.upstream.start()
        return self.upstream

    async def _tell_federation(self) -> None:
        try:
            federation = ray.get_actor(names.MCP_FEDERATION, namespace=self.ray_namespace)
        except ValueError:  # no federation (yet): it lists the tools when it starts
            return
        federation.refresh.remote(self.name)

    async def ready(self, wait_s: float = 30.0) -> dict[str, Any]:
        """Starts the process if it is not running; waits up to `wait_s` for it; its status."""
        await self.upstream.start(wait_s=wait_s)
        return self.upstream.status()

    def status(self) -> dict[str, Any]:
        """The process's connection status: connected, restarts, last_error, protocol_version."""
        return self.upstream.status()

    async def list_tools(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """The server's tools (a `ToolListing` as JSON: tools, ttl_ms, cache_scope)."""
        listing = await (await self._started()).list_tools(timeout_s)
        return {"tools": listing.tools, "ttl_ms": listing.ttl_ms, "cache_scope": listing.cache_scope}

    async def call_tool(self, name: str, arguments: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Calls tool `name` with `arguments`, within `timeout_s`; the CallToolResult JSON."""
        return await (await self._started()).call_tool(name, arguments, timeout_s)

    async def list_resources(self) -> dict[str, Any]:
        """The server's resources (a ListResourcesResult as JSON)."""
        return await (await self._started()).list_resources()

    async def read_resource(self, uri: str) -> dict[str, Any]:
        """Reads the resource `uri` (a ReadResourceResult as JSON)."""
        return await (await self._started()).read_resource(uri)

    async def list_prompts(self) -> dict[str, Any]:
        """The server's prompts (a ListPromptsResult as JSON)."""
        return await (await self._started()).list_prompts()

    async def get_prompt(self, name: str, arguments: dict[str, str] | None) -> dict[str, Any]:
        """Gets the prompt `name` with `arguments` (a GetPromptResult as JSON)."""
        return await (await self._started()).get_prompt(name, arguments)

    async def complete(
        self, ref: dict[str, Any], argument: dict[str, str], context_arguments: dict[str, str] | None
    ) -> dict[str, Any]:
        """Completes an argument of a prompt or resource template (a CompleteResult as JSON)."""
        return await (await self._started()).complete(ref, argument, context_arguments)

    async def shutdown(self) -> None:
        """Ends the process (before the actor is killed, so that no child is left behind)."""
        await self.upstream.close()


class StdioActorUpstream:
    """The federation's `Upstream` for a stdio server run by its `McpStdioServer` actor.

    Errors come back as the actor raised them (not Ray's wrapper); the actor dying during a
    call is an `UpstreamDown` that may have run the tool."""

    kind = "stdio"

    def __init__(self, name: str, actor: Any, cancel: Callable[[Any], Any] = ray.cancel):
        """`actor` is the `McpStdioServer` handle; `cancel` cancels one of its calls by its ref
        (`ray.cancel`; a test's handle brings its own)."""
        self.name = name
        self.actor = actor
        self._cancel = cancel
        self._status: dict[str, Any] = {"connected": True, "restarts": 0, "last_error": None}

    async def start(self) -> None:
        """Asks the actor to start its process now, without waiting for it."""
        self.actor.ready.remote(0)  # the process starts now, not at the first call

    async def close(self) -> None:
        """Nothing to close here: the actor owns the process, and `down` ends it."""
        return None  # the actor is the process's owner; `down` ends it

    def on_list_changed(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Ignored: the actor tells the federation actor to relist when its tools change."""
        return None  # the actor calls the federation actor's `refresh` itself

    def status(self) -> dict[str, Any]:
        """The actor's status as last polled (`poll`)."""
        return self._status

    async def poll(self) -> None:
        """Fetches the actor's status; a dead or unreachable actor reads as not connected."""
        try:
            self._status = await self.actor.status.remote()
        except Exception as e:
            self._status = {**self._status, "connected": False, "last_error": f"the stdio actor: {e}"}

    async def _call(self, method: str, *args: Any, timeout_s: float = 30.0) -> Any:
        ref = getattr(self.actor, method).remote(*args)
        try:
            return await asyncio.wait_for(ref, timeout_s + 1.0)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            # The actor's call ends too: it holds no process request nobody waits for.
            with contextlib.suppress(Exception):
                self._cancel(ref)
            raise
        except RayTaskError as e:
            raise unwrap_error(e) from None
        except RayActorError as e:
            raise UpstreamDown(f"the stdio actor died: {e}", sent=True) from None

    async def list_tools(self, timeout_s: float = 30.0) -> ToolListing:
        """The server's tools through its actor."""
        raw = await self._call("list_tools", timeout_s, timeout_s=timeout_s)
        return ToolListing(raw["tools"], raw["ttl_ms"], raw["cache_scope"])

    async def call_tool(self, name: str, arguments: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Calls tool `name` through the actor; past `timeout_s` (and a second's grace) the actor's call is
        cancelled."""
        return await self._call("call_tool", name, arguments, timeout_s, timeout_s=timeout_s)

    async def list_resources(self) -> dict[str, Any]:
        """The server's resources through its actor."""
        return await self._call("list_resources")

    async def read_resource(self, uri: str) -> dict[str, Any]:
        """Reads the resource `uri` through the actor."""
        return await self._call("read_resource", uri)

    async def list_prompts(self) -> dict[str, Any]:
        """The server's prompts through its actor."""
        return await self._call("list_prompts")

    async def get_prompt(self, name: str, arguments: dict[str, str] | None) -> dict[str, Any]:
        """Gets the prompt `name` through the actor."""
        return await self._call("get_prompt", name, arguments)

    async def complete(
        self, ref: dict[str, Any], argument: dict[str, str], context_arguments: dict[str, str] | None
    ) -> dict[str, Any]:
        """Completes an argument through the actor."""
        return await self._call("complete", ref, argument, context_arguments)
