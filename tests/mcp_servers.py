"""MCP servers with faults on purpose, for the federation's tests: the example server's tools plus
ones that hang, fail, answer what the protocol refuses, or end their own process.

Run as `python -m tests.mcp_servers` it serves the faulty server over stdio (its `exit` tool ends
the process, as a crashing stdio upstream does)."""

from __future__ import annotations

import asyncio
import os

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

from actors._private.mcp.example_server import build_server

__all__ = ["faulty_server"]


def faulty_server(name: str = "faulty", description: str = "Echo a text.") -> MCPServer:
    """The example server plus `echo` (its description settable, to change a definition),
    `fail` (raises), `hang` (never answers) and `exit` (ends the process mid-call)."""
    server = build_server(name)

    @server.tool(description=description, annotations=ToolAnnotations(read_only_hint=True))
    def echo(text: str) -> str:
        return text

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

    return server


if __name__ == "__main__":
    faulty_server().run("stdio")
