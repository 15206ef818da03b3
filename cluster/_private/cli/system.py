"""`swarm up`, `status`, `down` and `demo`: the system as a whole."""

from __future__ import annotations

import json
import sys

import click

from cluster._private.cli.options import address_option, config_option, connect_system, namespace_option
from cluster._private.format import format_status, progress_bars

__all__ = ["demo", "down", "status", "up"]


@click.command()
@config_option
@address_option
def up(config_path: str | None, address: str | None) -> None:
    """Bring the system up; start a local Ray head if none runs and no address is given."""
    from cluster._private.config import load_config
    from cluster._private.connection import connect_or_start
    from cluster._private.lifecycle import check_secrets, mark_local_head
    from cluster._private.lifecycle import up as up_system

    config = load_config(config_path)  # fails before Ray starts
    check_secrets(config)
    head = connect_or_start(address, config.namespace)
    try:
        with progress_bars() as progress:
            state = up_system(config, progress=progress)
        if head is not None:
            mark_local_head(config.namespace)
    except BaseException:
        if head is not None:  # nothing of a failed `up` keeps holding the ports
            head.stop()
            click.echo("stopped the local Ray head this `up` had started", err=True)
        raise
    click.echo(format_status(state))
    click.echo(f"\nsystem {config.namespace!r} is up; `swarm status`, `swarm submit`, `swarm down`")


@click.command()
@config_option
@namespace_option
@address_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option(
    "--watch", is_flag=True, help="A live view, read again every --interval seconds (Ctrl-C ends it)."
)
@click.option(
    "--interval", default=2.0, show_default=True, type=click.FloatRange(0.2), help="Seconds between reads."
)
def status(
    config_path: str | None,
    namespace: str | None,
    address: str | None,
    as_json: bool,
    watch: bool,
    interval: float,
) -> None:
    """Show swarms, agents, queue depths and task counts."""
    from cluster._private.status import status as system_status

    namespace = connect_system(namespace, address, config_path)
    if watch:
        from cluster._private.watch import watch as watch_system

        try:
            watch_system(namespace, interval)
        except KeyboardInterrupt:
            pass
        return
    state = system_status(namespace)
    click.echo(json.dumps(state, indent=2, default=str) if as_json else format_status(state))


@click.command()
@config_option
@namespace_option
@address_option
def down(config_path: str | None, namespace: str | None, address: str | None) -> None:
    """Remove everything `up` created in the namespace, including a local head it started."""
    from cluster._private.lifecycle import down as down_system

    namespace = connect_system(namespace, address, config_path)
    for name in down_system(namespace):
        click.echo(f"removed {name}")


@click.command()
@config_option
@address_option
def demo(config_path: str | None, address: str | None) -> None:
    """The main job: bring the system up, run a demo workload, print results, shut down."""
    from cluster._private.demo import run_demo

    sys.exit(run_demo(config_path, address))
