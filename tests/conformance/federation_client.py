"""The MCP conformance suite's client under test: the federation's upstream client
(`actors._private.mcp.upstream.http_upstream`), run by `conformance client --command ...` once
per scenario with the scenario's server URL as its last argument.

It does what a federation does with an upstream: connects (the 2025-11-25 handshake or the
2026-07-28 discovery, as MCP_CONFORMANCE_PROTOCOL_VERSION asks), lists the tools and calls them
(the calls MCP_CONFORMANCE_CONTEXT names, else each listed tool with its schema's defaults), and
lists and reads resources and prompts, as the re-export does."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import Any

from actors._private.mcp.upstream import http_upstream

TIMEOUT_S = 10.0


def arguments_for(schema: dict[str, Any]) -> dict[str, Any]:
    """Arguments from a tool's input schema: each property's default or example, else a value of its type."""
    by_type = {"string": "test", "number": 1, "integer": 1, "boolean": True, "array": [], "object": {}}
    out = {}
    for name, prop in (schema.get("properties") or {}).items():
        if "default" in prop:
            out[name] = prop["default"]
        elif prop.get("examples"):
            out[name] = prop["examples"][0]
        elif name in (schema.get("required") or []):
            kind = prop.get("type")
            out[name] = by_type.get(kind[0] if isinstance(kind, list) else kind, "test")
    return out


async def step(what: str, work: Any) -> Any:
    try:
        return await work
    except Exception as e:  # one failing request does not stop the others; the suite judges
        print(f"{what}: {type(e).__name__}: {e}", file=sys.stderr)
        return None


async def main(url: str) -> int:
    version = os.environ.get("MCP_CONFORMANCE_PROTOCOL_VERSION")
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    mode = "auto" if not version else ("legacy" if version < "2026" else version)
    upstream = http_upstream("conformance", url, mode=mode)
    await upstream.start()
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    # The first connection's outcome, either way (a server that wants OAuth refuses it at once).
    while not (upstream.connected or upstream.last_error) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    if not upstream.connected:
        print(f"could not connect: {upstream.last_error}", file=sys.stderr)
        await upstream.close()
        return 1
    try:
        listing = await step("tools/list", upstream.list_tools(TIMEOUT_S))
        tools = listing.tools if listing else []
        calls = context.get("toolCalls") or [
            {"name": t["name"], "arguments": arguments_for(t.get("inputSchema") or {})} for t in tools
        ]
        if os.environ.get("MCP_CONFORMANCE_SCENARIO") == "json-schema-2020-12-preservation":
            # Echo the rich schema as the federation holds it (what it re-exports), verbatim.
            focal = next(t for t in tools if "schema" not in (t["inputSchema"].get("properties") or {}))
            echo = next(t for t in tools if t is not focal)
            calls = [{"name": echo["name"], "arguments": {"schema": focal["inputSchema"]}}]
        for call in calls:
            result = await step(
                f"tools/call {call['name']}",
                upstream.call_tool(call["name"], call.get("arguments") or {}, TIMEOUT_S),
            )
            print(json.dumps({"tool": call["name"], "result": result})[:2000])
        resources = await step("resources/list", upstream.list_resources(TIMEOUT_S))
        for r in (resources or {}).get("resources", []):
            await step(f"resources/read {r['uri']}", upstream.read_resource(r["uri"], TIMEOUT_S))
        prompts = await step("prompts/list", upstream.list_prompts(TIMEOUT_S))
        for p in (prompts or {}).get("prompts", []):
            await step(f"prompts/get {p['name']}", upstream.get_prompt(p["name"], None, TIMEOUT_S))
    finally:
        print(f"upstream: {upstream.status()}", file=sys.stderr)
        await upstream.close()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(asyncio.run(main(sys.argv[-1])))
