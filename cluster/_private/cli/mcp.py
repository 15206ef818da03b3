"""`swarm mcp servers`, `tools`, `call` and `approve`: the federated MCP servers, their tools,
calling one, and approving a tool definition that changed."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from cluster._private.cli.options import address_option, connect_system, namespace_option

__all__ = ["mcp"]


@click.group()
def mcp() -> None:
    """MCP: the upstream servers federated as capabilities, their tools, calls and approvals."""


def _federation(namespace: str) -> Any:
    """The system's federation actor; a usage error when the system federates no MCP server."""
    from cluster._private.connection import existing
    from models._private.core import names

    handle = existing(names.MCP_FEDERATION, namespace)
    if handle is None:
        raise click.ClickException(
            f"system {namespace!r} federates no MCP server (configure `mcp.servers` and `swarm up`)"
        )
    return handle


def _federation_call(namespace: str, method: str, *args: Any) -> Any:
    from cluster._private.connection import call

    federation = _federation(namespace)
    return call(lambda: getattr(federation, method).remote(*args))


@mcp.command(name="servers")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: every field the federation reports.")
@namespace_option
@address_option
def mcp_servers(as_json: bool, namespace: str | None, address: str | None) -> None:
    """List the upstream MCP servers: transport, group, health, breaker, load, latency, last error."""
    from cluster._private.format import format_mcp_servers

    rows = _federation_call(connect_system(namespace, address), "servers")
    click.echo(json.dumps(rows, indent=2) if as_json else format_mcp_servers(rows))


@mcp.command(name="tools")
@click.option("--server", default=None, help="Only this server's (or group's) tools.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, with the definitions' hashes.")
@namespace_option
@address_option
def mcp_tools(server: str | None, as_json: bool, namespace: str | None, address: str | None) -> None:
    """List every upstream tool: its capability, server and state (approved; pending or changed,
    awaiting `swarm mcp approve`; or a name collision within its group)."""
    from cluster._private.format import format_mcp_tools

    rows = _federation_call(connect_system(namespace, address), "tools")
    rows = [r for r in rows if server is None or server in (r["server"], r["group"])]
    click.echo(json.dumps(rows, indent=2) if as_json else format_mcp_tools(rows))


@mcp.command(name="call")
@click.argument("capability")
@click.option("--input", "payload", default="{}", help="The tool's arguments, a JSON object.")
@click.option(
    "--direct",
    is_flag=True,
    help="Call the federation directly, not as a task through a queen (federated tools only).",
)
@click.option("--timeout-s", default=None, type=float, help="Per-attempt timeout (--direct: the deadline).")
@click.option("--json", "as_json", is_flag=True, help="Print the CallToolResult as JSON.")
@namespace_option
@address_option
def mcp_call(
    capability: str,
    payload: str,
    direct: bool,
    timeout_s: float | None,
    as_json: bool,
    namespace: str | None,
    address: str | None,
) -> None:
    """Call CAPABILITY (a federated tool or any swarm capability) as an MCP tool and print the
    CallToolResult. Runs as a task through the queen, as `swarm submit --wait` does.

    Exit status: 0 a result, 1 an error result (`isError`: the tool said no, or its task
    failed, timed out or was cancelled). It waits until the task ends; --timeout-s bounds each
    attempt, as `swarm submit --timeout-s` does.
    """
    try:
        arguments = json.loads(payload)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint="--input") from None
    if not isinstance(arguments, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--input")
    from cluster._private.format import call_tool_result, format_call_tool_result

    ns = connect_system(namespace, address)
    if direct:
        result = _federation_call(ns, "call", capability, arguments, timeout_s)
    else:
        from cluster._private.client import Client

        client = Client(ns)
        task = client.result(client.submit(capability, arguments, timeout_s=timeout_s))
        result = call_tool_result(task)
    click.echo(json.dumps(result, indent=2) if as_json else format_call_tool_result(result))
    sys.exit(1 if result.get("isError") else 0)


@mcp.command(name="approve")
@click.argument("server")
@click.argument("tool", required=False)
@click.option(
    "--hash",
    "definition_hash",
    default=None,
    help="The definition hash reviewed (`swarm mcp tools`): refused if the current one differs.",
)
@namespace_option
@address_option
def mcp_approve(
    server: str, tool: str | None, definition_hash: str | None, namespace: str | None, address: str | None
) -> None:
    """Approve the current definition of SERVER's TOOL (by tool name or capability), or of every
    pending or changed tool of SERVER (a server or a group): the definition is pinned, and the
    tool is offered again. Prints the capabilities approved."""
    approved = _federation_call(connect_system(namespace, address), "approve", server, tool, definition_hash)
    click.echo("\n".join(approved) if approved else f"nothing to approve on {server!r}")
