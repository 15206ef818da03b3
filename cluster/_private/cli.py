"""The `swarm` command (also `python -m cluster`), on click: ray already depends on it."""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

import click

from actors._private.task import TaskResult
from cluster._private.client import Client
from cluster._private.config import load_config
from cluster._private.connection import connect, connect_or_start
from cluster._private.demo import run_demo
from cluster._private.format import format_status
from cluster._private.lifecycle import down as down_system
from cluster._private.lifecycle import mark_local_head
from cluster._private.lifecycle import up as up_system
from cluster._private.status import status as system_status
from models._private.core import env
from models._private.core.errors import SwarmrayError

__all__ = ["main"]


def _namespace_option(f: Any) -> Any:
    return click.option(
        "--namespace",
        "-n",
        default=None,
        help="Ray namespace of the system (default: the --config file's, $SWARMRAY_NAMESPACE, or swarmray).",
    )(f)


def _namespace(namespace: str | None, config_path: str | None = None) -> str:
    """--namespace, else the config file's (when --config is given), else the environment's."""
    if namespace:
        return namespace
    if config_path:
        return load_config(config_path).namespace  # applies $SWARMRAY_NAMESPACE too
    return env.namespace() or "swarmray"


def _address_option(f: Any) -> Any:
    return click.option(
        "--address", default=None, help="Ray cluster: 'auto', 'host:port' or 'ray://host:10001'."
    )(f)


def _config_option(f: Any) -> Any:
    return click.option(
        "--config",
        "config_path",
        default=None,
        type=click.Path(dir_okay=False),
        help="System YAML (default: $SWARMRAY_CONFIG or configs/local.yaml).",
    )(f)


@click.group()
def cli() -> None:
    """Run fleets of AI agents on a Ray cluster."""


@cli.command()
@_config_option
@_address_option
def up(config_path: str | None, address: str | None) -> None:
    """Bring the system up; start a local Ray head if none runs and no address is given."""
    config = load_config(config_path)  # fails before Ray starts
    started = connect_or_start(address, config.namespace)
    state = up_system(config)
    if started:
        mark_local_head(config.namespace)
    click.echo(format_status(state))
    click.echo(f"\nsystem {config.namespace!r} is up; `swarm status`, `swarm submit`, `swarm down`")


@cli.command()
@_config_option
@_namespace_option
@_address_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def status(config_path: str | None, namespace: str | None, address: str | None, as_json: bool) -> None:
    """Show swarms, agents, queue depths and task counts."""
    namespace = _namespace(namespace, config_path)
    connect(address or "auto", namespace)
    state = system_status(namespace)
    click.echo(json.dumps(state, indent=2, default=str) if as_json else format_status(state))


@cli.command()
@click.argument("capability")
@click.option("--input", "payload", default="{}", help="Task payload as a JSON object.")
@click.option("--swarm", default=None, help="Swarm to submit to (default: the registry picks).")
@click.option("--priority", default=0, show_default=True, help="Higher runs first.")
@click.option("--timeout-s", default=None, type=float, help="Per-attempt timeout.")
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@_namespace_option
@_address_option
def submit(
    capability: str,
    payload: str,
    swarm: str | None,
    priority: int,
    timeout_s: float | None,
    wait: bool,
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
    client = Client(_namespace(namespace), address or "auto")
    task_id = client.submit(capability, data, swarm=swarm, priority=priority, timeout_s=timeout_s)
    if not wait:
        click.echo(task_id)
        return
    _print_result(client.result(task_id))


def _print_result(result: TaskResult) -> None:
    click.echo(result.model_dump_json(indent=2))
    sys.exit(0 if result.ok else 1 if result.status.final else 3)


@cli.command()
@click.argument("task_id")
@click.option("--timeout-s", default=None, type=float, help="Seconds to wait (default: no limit).")
@_namespace_option
@_address_option
def result(task_id: str, timeout_s: float | None, namespace: str | None, address: str | None) -> None:
    """Print the result of TASK_ID, waiting for it to end.

    Exit status: 0 succeeded, 1 failed, timed out or cancelled, 3 not ended within --timeout-s.
    """
    _print_result(Client(_namespace(namespace), address or "auto").result(task_id, timeout_s))


@cli.command()
@click.argument("task_id")
@_namespace_option
@_address_option
def cancel(task_id: str, namespace: str | None, address: str | None) -> None:
    """Cancel TASK_ID if it has not ended (exit status 1 when it already had)."""
    client = Client(_namespace(namespace), address or "auto")
    if client.cancel(task_id):
        click.echo(f"cancelled {task_id}")
        return
    click.echo(f"not cancelled: {task_id} already {client.result(task_id, 0).status.value}")
    sys.exit(1)


@cli.command()
@_config_option
@_namespace_option
@_address_option
def down(config_path: str | None, namespace: str | None, address: str | None) -> None:
    """Remove everything `up` created in the namespace, including a local head it started."""
    namespace = _namespace(namespace, config_path)
    connect(address or "auto", namespace)
    for name in down_system(namespace):
        click.echo(f"removed {name}")


@cli.command()
@_config_option
@_address_option
def demo(config_path: str | None, address: str | None) -> None:
    """The main job: bring the system up, run a demo workload, print results, shut down."""
    sys.exit(run_demo(config_path, address))


def main() -> None:
    """Entry point of the `swarm` console script."""
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except SwarmrayError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except Exception as e:  # one line for the user; the traceback when debugging
        if env.log_level() == "DEBUG":
            traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0]
        click.echo(f"error: {type(e).__name__}: {first} (SWARMRAY_LOG_LEVEL=DEBUG shows more)", err=True)
        sys.exit(2)
