"""`swarm memory load`: the swarms' memory stores."""

from __future__ import annotations

import click

from cluster._private.cli.options import address_option, connect_system, namespace_option
from cluster._private.format import progress_bars

__all__ = ["memory"]


@click.group()
def memory() -> None:
    """The swarms' memory stores."""


@memory.command(name="load")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--store", required=True, help="The memory store: a swarm's name, or global.")
@click.option(
    "--in", "into", default=None, help="The namespace of records that name none (default: the store's)."
)
@click.option("--batch", default=256, show_default=True, type=click.IntRange(1), help="Records a write.")
@address_option
@namespace_option
def memory_load(
    path: str, store: str, into: str | None, batch: int, namespace: str | None, address: str | None
) -> None:
    """Load PATH, a JSONL file of records (text, and optionally id, namespace, metadata, tier,
    importance, ttl_s), into a memory store; every line is checked before anything is written."""
    from cluster._private.memory_load import load_records, records_of_file

    system = connect_system(namespace, address)
    records = records_of_file(path, into or store)
    with progress_bars(transient=False) as progress:
        stored = load_records(system, store, records, batch, progress)
    click.echo(f"{stored} records stored in memory:{store}")
