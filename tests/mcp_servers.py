"""MCP servers with faults on purpose, for the federation's tests: the example server's tools plus
ones that hang, fail, answer what the protocol refuses, or end their own process.

Run as `python -m tests.mcp_servers` it serves the faulty server over stdio (its `exit` tool ends
the process, as a crashing stdio upstream does)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

from actors._private.mcp.example_server import build_server

__all__ = ["Faults", "faulty_server", "malformed_server"]


class Faults(dict):
    """What a faulty server's tools do now, changed by a test while the server runs:
    faults['echo'] / faults['count'] = 'hang' makes that tool never answer; faults['calls']
    counts the calls of `count`, which has no annotations (a call that may not run twice)."""


def faulty_server(
    name: str = "faulty",
    description: str = "Echo a text.",
    faults: Faults | None = None,
    tools_ttl_ms: int = 60_000,
) -> MCPServer:
    """The example server plus `echo` (read-only; its description settable, to change a
    definition), `count` (not annotated), `fail` (raises), `hang` (never answers) and `exit`
    (ends the process mid-call)."""
    faults = faults if faults is not None else Faults()
    server = build_server(name, tools_ttl_ms)

    @server.tool(description=description, annotations=ToolAnnotations(read_only_hint=True))
    async def echo(text: str) -> str:
        if faults.get("echo") == "hang":
            await asyncio.Event().wait()
        return text

    @server.tool(description="Counts its calls (not read-only, not idempotent).")
    async def count() -> int:
        faults["calls"] = faults.get("calls", 0) + 1
        if faults.get("count") == "hang":
            await asyncio.Event().wait()
        return faults["calls"]

    @server.tool(description="Always raises.", annotations=ToolAnnotations(idempotent_hint=True))
    def fail() -> str:
        raise RuntimeError("the tool failed on purpose")

    @server.tool(description="Never answers.")
    async def hang() -> str:
        await asyncio.Event().wait()
        return "never"

    @server.tool(description="Ends this server's process before answering.")
    def exit() -> str:
        os._exit(3)

    @server.completion()
    async def complete(ref: Any, argument: Any, context: Any) -> types.Completion:
        words = ["alpha", "beta", "gamma"]
        return types.Completion(values=[w for w in words if w.startswith(argument.value)])

    return server


def malformed_server() -> Server:
    """A low-level server whose tool answers what is not a CallToolResult."""

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(name="garbled", input_schema={"type": "object"})])

    async def call_tool(ctx: Any, params: Any) -> Any:
        return {"content": "not a list of blocks"}

    return Server("malformed", on_list_tools=list_tools, on_call_tool=call_tool)


if __name__ == "__main__":
    faulty_server().run("stdio")
