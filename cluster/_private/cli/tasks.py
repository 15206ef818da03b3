"""`swarm submit`, `result`, `cancel` and `capabilities`: tasks and what they can ask for."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from cluster._private.cli.options import address_option, connect_system, namespace_option
from cluster._private.format import format_result

if TYPE_CHECKING:
    from actors._private.task import TaskResult

__all__ = ["cancel", "capabilities", "result", "submit"]


@click.command()
@click.argument("capability")
@click.option("--input", "payload", default="{}", help="Task payload as a JSON object.")
@click.option("--swarm", default=None, help="Swarm to submit to (default: the registry picks).")
@click.option("--priority", default=0, show_default=True, help="Higher runs first.")
@click.option("--timeout-s", default=None, type=float, help="Per-attempt timeout.")
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--json", "as_json", is_flag=True, help="With --wait, print the whole result as JSON.")
@namespace_option
@address_option
def submit(
    capability: str,
    payload: str,
    swarm: str | None,
    priority: int,
    timeout_s: float | None,
    wait: bool,
    as_json: bool,
    namespace: str | None,
    address: str | None,
) -> None:
    """Submit a task for CAPABILITY; print its id, or with --wait its result (exit status as
    `result`'s)."""
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint="--input") from None
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--input")
    from cluster._private.client import Client  # after the checks above, which answer at once

    client = Client(connect_system(namespace, address))
    task_id = client.submit(capability, data, swarm=swarm, priority=priority, timeout_s=timeout_s)
    if not wait:
        click.echo(task_id)
        return
    _print_result(client.result(task_id), as_json)


def _print_result(result: TaskResult, as_json: bool) -> None:
    """How it ended, in how long, where, then its output; with `as_json` the whole TaskResult."""
    click.echo(result.model_dump_json(indent=2) if as_json else format_result(result))
    sys.exit(0 if result.ok else 1 if result.status.final else 3)


@click.command()
@click.argument("task_id")
@click.option("--timeout-s", default=None, type=float, help="Seconds to wait (default: no limit).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@namespace_option
@address_option
def result(
    task_id: str, timeout_s: float | None, as_json: bool, namespace: str | None, address: str | None
) -> None:
    """Print the result of TASK_ID, waiting for it to end: how it ended, in how long and where,
    then its output (or error).

    Exit status: 0 succeeded, 1 failed, timed out or cancelled, 3 not ended within --timeout-s.
    """
    from cluster._private.client import Client

    _print_result(Client(connect_system(namespace, address)).result(task_id, timeout_s), as_json)


@click.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, with each payload's JSON Schema.")
@namespace_option
@address_option
def capabilities(name: str | None, as_json: bool, namespace: str | None, address: str | None) -> None:
    """List the capabilities tasks can ask for; with NAME (or a family such as `memory.`), what
    its payload takes: each field's type, whether it is required, and what it means."""
    from cluster._private.client import Client
    from cluster._private.format import format_capabilities

    entries = Client(connect_system(namespace, address)).capabilities(name)
    click.echo(
        json.dumps(entries, indent=2) if as_json else format_capabilities(entries, fields=name is not None)
    )


@click.command()
@click.argument("task_id")
@namespace_option
@address_option
def cancel(task_id: str, namespace: str | None, address: str | None) -> None:
    """Cancel TASK_ID if it has not ended (exit status 1 when it already had)."""
    from cluster._private.client import Client

    client = Client(connect_system(namespace, address))
    if client.cancel(task_id):
        click.echo(f"cancelled {task_id}")
        return
    click.echo(f"not cancelled: {task_id} already {client.result(task_id, 0).status.value}")
    sys.exit(1)
