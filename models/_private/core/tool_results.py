"""MCP `CallToolResult` JSON built one way for every layer: the /mcp endpoint (serve), the
federation's upstream client (actors) and `swarm mcp call` (cluster)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["is_call_tool_result", "tool_error", "tool_result"]

_KEPT = ("content", "structuredContent", "isError", "_meta")


def is_call_tool_result(output: Any) -> bool:
    """Whether `output` is already a CallToolResult (a federated tool's: a `content` list)."""
    return isinstance(output, dict) and isinstance(output.get("content"), list)


def tool_result(output: Any, structured: bool = True) -> dict[str, Any]:
    """`output` as CallToolResult JSON: one that already is one, its fields as they are (nothing
    else); else the output as JSON text, and also as `structuredContent` when it is an object and
    `structured` (the /mcp endpoint asks for it only of tools that declare an output schema)."""
    if is_call_tool_result(output):
        return {k: output[k] for k in _KEPT if k in output}
    out: dict[str, Any] = {"content": [{"type": "text", "text": json.dumps(output, default=str)}]}
    if structured and isinstance(output, dict):
        out["structuredContent"] = output
    out["isError"] = False
    return out


def tool_error(message: str) -> dict[str, Any]:
    """A failure as CallToolResult JSON: the message as text, `isError`."""
    return {"content": [{"type": "text", "text": message}], "isError": True}
