"""The pure pieces of the /mcp endpoint: MCP tools from the queens' catalog entries, what a key
may see and call, the Host and Origin checks, and a task's outcome as a `CallToolResult`.
Nothing here touches Ray or the network, so that tests/unit drive it directly."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from models._private.core.tool_results import tool_error, tool_result
from serve._private.auth.config import LOOPBACK
from serve._private.auth.keys import KeyRecord, denial, matches_any

__all__ = [
    "BUILTIN_TOOLS",
    "ToolEntry",
    "allowed_swarms",
    "builtin_tools",
    "call_result",
    "error_result",
    "facts_namespaces",
    "host_allowed",
    "origin_allowed",
    "tools_from_catalog",
    "visible",
]

SEARCH_FACTS, RECALL_MEMORY = "search_facts", "recall_memory"
BUILTIN_TOOLS = (SEARCH_FACTS, RECALL_MEMORY)
MAX_K = 20
# The spec's tool names (2025-11-25): 1-128 of [A-Za-z0-9_.-]; a capability name always is one.
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


@dataclass
class ToolEntry:
    """One MCP tool: a capability (offered by `swarms`) or a built-in (`swarms` empty)."""

    name: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None = None
    annotations: dict[str, Any] | None = None
    swarms: list[str] = field(default_factory=list)
    builtin: bool = False

    def tool(self) -> dict[str, Any]:
        """The tool as `tools/list` gives it (the spec's field names)."""
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "inputSchema": self.input_schema,
        }
        if self.output_schema is not None:
            out["outputSchema"] = self.output_schema
        if self.annotations:
            out["annotations"] = self.annotations
        return out


def _object_schema(schema: Any) -> dict[str, Any]:
    # MCP wants an object schema at the top; a capability without a payload model takes any object.
    if not isinstance(schema, dict) or schema.get("type") not in (None, "object"):
        return {"type": "object"}
    return {"type": "object", **schema}


def tools_from_catalog(entries: list[dict[str, Any]]) -> dict[str, ToolEntry]:
    """The tools of the queens' catalog entries, by name: one per capability, however many swarms
    offer it (their names kept for a key limited to some swarms). `payload_schema` (or a
    queen's `schema`) becomes `inputSchema`; `output_schema` and `annotations` pass through. An
    entry whose capability is no valid tool name, or a family (`text.*`), is left out."""
    tools: dict[str, ToolEntry] = {}
    for entry in entries:
        name = entry.get("capability") or ""
        if not _TOOL_NAME.match(name) or name in BUILTIN_TOOLS:
            continue
        tool = tools.get(name)
        if tool is None:
            schema = entry.get("payload_schema", entry.get("schema"))
            output = entry.get("output_schema")
            tool = tools[name] = ToolEntry(
                name=name,
                description=entry.get("description") or f"The capability {name}.",
                input_schema=_object_schema(schema),
                output_schema=output if isinstance(output, dict) else None,
                annotations=entry.get("annotations") or None,
            )
        swarm = entry.get("swarm")
        if swarm and swarm not in tool.swarms:
            tool.swarms.append(swarm)
    return tools


def builtin_tools() -> dict[str, ToolEntry]:
    """`search_facts` (the facts service's search) and `recall_memory` (a memory store's search)."""
    query = {"type": "string", "minLength": 1, "description": "What to look for."}
    k = {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 5, "description": "How many results."}
    read_only = {"readOnlyHint": True, "openWorldHint": False}
    return {
        SEARCH_FACTS: ToolEntry(
            name=SEARCH_FACTS,
            description="Searches the facts service: facts (sentences) and passages, merged by score "
            "over the namespaces given (default: every one the key may use).",
            input_schema={
                "type": "object",
                "properties": {
                    "query": query,
                    "k": k,
                    "namespaces": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    "mode": {"enum": ["passages", "facts", "hybrid", "graph"], "default": "hybrid"},
                },
                "required": ["query"],
                "additionalProperties": False,
            },
            annotations=read_only,
            builtin=True,
        ),
        RECALL_MEMORY: ToolEntry(
            name=RECALL_MEMORY,
            description="Recalls the records of a swarm's memory (or the global memory) closest to a query.",
            input_schema={
                "type": "object",
                "properties": {
                    "query": query,
                    "k": k,
                    "swarm": {"type": "string", "description": "Whose memory; default the global memory."},
                },
                "required": ["query"],
                "additionalProperties": False,
            },
            annotations=read_only,
            builtin=True,
        ),
    }


def allowed_swarms(record: KeyRecord | None, swarms: list[str]) -> list[str]:
    """The swarms of `swarms` a key may use (all without a key or a swarm list)."""
    return [s for s in swarms if record is None or matches_any(record.swarms, s)]


def visible(record: KeyRecord | None, tool: ToolEntry) -> bool:
    """Whether a key sees (and may call) `tool`: its name matches the key's capability patterns
    and, for a capability, some swarm offering it matches its swarm patterns."""
    if record is None:
        return True
    if not matches_any(record.capabilities, tool.name):
        return False
    return tool.builtin or bool(allowed_swarms(record, tool.swarms))


def facts_namespaces(record: KeyRecord | None, existing: list[str], wanted: Any) -> list[str]:
    """The facts namespaces `search_facts` searches: those `wanted` (default every one the key may
    use), each one the key may use and one that exists.

    Raises:
        ValueError: why not, naming only namespaces the key may use (a limited key learns
            nothing of the others).
    """
    usable = [n for n in existing if record is None or not denial(record, None, namespace=n)]
    if wanted is None:
        if not usable:
            raise ValueError("this key may use no facts namespace")
        return usable
    if not isinstance(wanted, list) or not wanted or not all(isinstance(n, str) for n in wanted):
        raise ValueError("namespaces: a non-empty list of namespace names")
    for n in wanted:  # the key's list first, so that whether another name exists is not told
        if record is not None and (why := denial(record, None, namespace=n)):
            raise ValueError(why)
    if unknown := [n for n in wanted if n not in existing]:
        raise ValueError(
            f"no facts namespace {unknown[0]!r}; this key may search {', '.join(usable) or 'none'}"
        )
    return list(dict.fromkeys(wanted))


def _split_host(value: str) -> tuple[str, str | None]:
    # "host:port", "[::1]:port", "host" -> (host, port)
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    host, sep, port = value.rpartition(":")
    return (host, port) if sep and port.isdigit() else (value, None)


def _matches(value: str, patterns: list[str]) -> bool:
    for allowed in patterns:
        if value == allowed or (allowed.endswith(":*") and value.startswith(allowed[:-1])):
            return True
    return False


def host_allowed(host: str | None, own_hosts: list[str], allowed_hosts: list[str]) -> bool:
    """Whether a Host header names this server: a loopback name, one of `own_hosts` (the configured
    host; any port), or a value of `allowed_hosts` ('name:*': any port). A DNS-rebinding page
    reaches the server under its attacker's name, which is none of these."""
    if not host:
        return False
    name, _ = _split_host(host.strip().lower())
    if name in LOOPBACK or name in {h.lower() for h in own_hosts if h not in ("0.0.0.0", "::")}:
        return True
    return _matches(host.strip().lower(), [h.lower() for h in allowed_hosts])


def origin_allowed(origin: str | None, allowed_origins: list[str]) -> bool:
    """Whether a request's Origin may call: none (not a browser), a loopback origin, or one of
    `allowed_origins` ('scheme://host:*': any port)."""
    if not origin:
        return True
    scheme, sep, rest = origin.strip().lower().partition("://")
    if not sep or scheme not in ("http", "https"):
        return False
    name, _ = _split_host(rest.rstrip("/"))
    if name in LOOPBACK:
        return True
    # Scheme and host are case-insensitive (RFC 3986), so is the comparison.
    return _matches(
        origin.strip().lower().rstrip("/"), [o.strip().lower().rstrip("/") for o in allowed_origins]
    )


def error_result(message: str) -> dict[str, Any]:
    """A tool's failure as the spec's `CallToolResult` JSON (`isError`)."""
    return tool_error(message)


def call_result(output: Any, output_schema: dict[str, Any] | None) -> dict[str, Any]:
    """A task's output as `CallToolResult` JSON (`tool_result`): `structuredContent` only when the
    tool declares an output schema."""
    return tool_result(output, structured=output_schema is not None)
