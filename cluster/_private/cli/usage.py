"""`swarm usage`: tokens and cost spent through the AI service."""

from __future__ import annotations

import json

import click

from cluster._private.cli.options import address_option, connect_system, namespace_option
from cluster._private.usage import BY

__all__ = ["usage"]


@click.command()
@click.option(
    "--by", type=click.Choice(BY), default="swarm", show_default=True, help="Rows per swarm, key or model."
)
@click.option("--since", default=None, help="Only what was spent since: 15m, 2h, 1d, or an ISO 8601 time.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows instead of a table.")
@address_option
@namespace_option
def usage(by: str, since: str | None, as_json: bool, namespace: str | None, address: str | None) -> None:
    """Tokens and cost spent through the AI service: by swarm (the tasks' own), key or model."""
    from cluster._private.security import parse_since
    from cluster._private.usage import format_usage
    from cluster._private.usage import usage as usage_of

    rows = usage_of(connect_system(namespace, address), by, parse_since(since) if since else None)
    click.echo(json.dumps(rows, indent=2) if as_json else format_usage(rows, by))
