"""A small MCP server that works offline, shipped so that a system (configs/local.yaml, the demo)
and the tests have a real upstream to federate.

    python -m actors._private.mcp.example_server            # stdio
    python -m actors._private.mcp.example_server --http 8765  # Streamable HTTP on 127.0.0.1:8765/mcp

Tools: `word_count` (read-only), `sha256` (read-only, idempotent), `now`, `sleep` (read-only, for
deadline tests and benchmarks); one resource (`example://readme`), one prompt (`summarize`) and
completions of its `text` argument.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
from typing import Any

from mcp_types import Completion, ToolAnnotations

from mcp.server.caching import CacheHint
from mcp.server.mcpserver import MCPServer

__all__ = ["build_server", "main"]

SAMPLE_TEXTS = ["The quick brown fox jumps over the lazy dog.", "The swarm answered.", "Hello, world."]
README = "This is swarmray's example MCP server: it counts words, hashes text and tells the time."


def build_server(name: str = "swarmray-example", tools_ttl_ms: int = 60_000) -> MCPServer:
    """The example server (a new instance each call, so tests can run several in one process);
    its tools/list says clients may cache it `tools_ttl_ms`."""
    server = MCPServer(
        name,
        instructions="Offline tools for swarmray's examples and tests.",
        cache_hints={"tools/list": CacheHint(ttl_ms=tools_ttl_ms, scope="public")},
    )

    @server.tool(
        description="Count the words, lines and characters of a text.",
        annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True),
    )
    def word_count(text: str) -> dict[str, int]:
        return {"words": len(text.split()), "lines": len(text.splitlines()), "chars": len(text)}

    @server.tool(
        description="The SHA-256 hex digest of a UTF-8 text.",
        annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True),
    )
    def sha256(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    @server.tool(description="The current UTC time, ISO 8601.")
    def now() -> str:
        return dt.datetime.now(dt.timezone.utc).isoformat()

    @server.tool(
        description="Wait the given seconds (at most 30), then answer how long it waited.",
        annotations=ToolAnnotations(read_only_hint=True),
    )
    async def sleep(seconds: float) -> float:
        await asyncio.sleep(min(max(seconds, 0.0), 30.0))
        return seconds

    @server.resource(
        "example://readme", name="readme", description="What this server is.", mime_type="text/plain"
    )
    def readme() -> str:
        return README

    @server.prompt(description="Ask for a one-sentence summary of a text.")
    def summarize(text: str) -> str:
        return f"Summarize in one sentence:\n\n{text}"

    @server.completion()
    async def complete(ref: Any, argument: Any, context: Any) -> Completion | None:
        # The summarize prompt's `text`: the sample texts that start with what was typed.
        if getattr(ref, "name", None) == "summarize" and argument.name == "text":
            return Completion(values=[t for t in SAMPLE_TEXTS if t.startswith(argument.value)])
        return None

    return server


def main(argv: list[str] | None = None) -> None:
    """Run the example server over stdio, or over Streamable HTTP with --http PORT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--http", type=int, metavar="PORT", help="serve Streamable HTTP on 127.0.0.1:PORT/mcp"
    )
    args = parser.parse_args(argv)
    server = build_server()
    if args.http is None:
        server.run("stdio")
    else:
        server.run(
            "streamable-http", host="127.0.0.1", port=args.http, stateless_http=True, json_response=True
        )


if __name__ == "__main__":
    main()
