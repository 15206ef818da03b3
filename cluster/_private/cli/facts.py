"""`swarm facts ingest` and `swarm facts search`: the facts service."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from cluster._private.cli.options import address_option, connect_system, namespace_option
from models._private.core import env

if TYPE_CHECKING:
    from cluster._private.facts_client import FactsClient

__all__ = ["facts"]


@click.group()
def facts() -> None:
    """Put documents into the facts service and search it."""


def _facts_client(url: str | None, namespace: str | None, address: str | None) -> FactsClient:
    from cluster._private.facts_client import FactsClient

    if url:  # a service named by URL: the key from $SWARMRAY_API_KEY, if any
        return FactsClient(url, api_key=env.api_key())
    return FactsClient.of_system(connect_system(namespace, address))


def _facts_options(f: Any) -> Any:
    f = click.option(
        "--url",
        default=None,
        help="The facts service's …/v1 root (default: the system's); a key goes over plain http to "
        "another machine only with SWARMRAY_INSECURE_HTTP=1.",
    )(f)
    return address_option(namespace_option(f))


@facts.command()
@click.argument("source")
@click.option("--in", "into", default="default", show_default=True, help="The facts namespace.")
@click.option("--batch", default=64, show_default=True, type=click.IntRange(1), help="Documents a request.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Follow extraction to the end.")
@_facts_options
def ingest(
    source: str,
    into: str,
    batch: int,
    wait: bool,
    url: str | None,
    namespace: str | None,
    address: str | None,
) -> None:
    """Ingest SOURCE: a JSONL file (one document a line: text, and optionally id, title, source,
    metadata, reference_time), a text file, a directory of them, or - for standard input."""
    from cluster._private.facts_client import read_documents

    try:
        docs = list(read_documents(source))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="SOURCE") from None
    if not docs:
        raise click.BadParameter(f"{source} holds no documents", param_hint="SOURCE")
    client = _facts_client(url, namespace, address)
    with click.progressbar(length=len(docs), label="stored   ", file=sys.stderr) as bar:
        jobs = client.ingest(docs, into, batch, on_batch=bar.update)
    last = client.progress(jobs, into)
    if wait:
        with click.progressbar(length=len(docs), label="extracted", file=sys.stderr) as bar:
            seen = [0]

            def advance(p: dict[str, int]) -> None:
                read = p["documents"] - p.get("pending", 0)
                bar.update(read - seen[0])
                seen[0] = read

            last = client.wait(jobs, into, on_progress=advance)
    click.echo(json.dumps({"namespace": into, "jobs": jobs, **last}))


@facts.command(name="search")
@click.argument("query")
@click.option(
    "--mode", type=click.Choice(["passages", "facts", "hybrid", "graph"]), default="graph", show_default=True
)
@click.option("-k", default=5, show_default=True, type=click.IntRange(1, 100), help="Of passages and facts.")
@click.option("--in", "into", multiple=True, help="Facts namespaces to search (repeat; default all).")
@click.option("--as-of", default=None, help="Read the world as it was then (ISO 8601 with a zone).")
@click.option("--json", "as_json", is_flag=True, help="Print the service's JSON answer.")
@_facts_options
def facts_search(
    query: str,
    mode: str,
    k: int,
    into: tuple[str, ...],
    as_of: str | None,
    as_json: bool,
    url: str | None,
    namespace: str | None,
    address: str | None,
) -> None:
    """Search the facts service for QUERY: facts (with when they held) and passages."""
    from cluster._private.format import format_search

    options: dict[str, Any] = {"mode": mode, "k": k, "namespaces": list(into) or None, "as_of": as_of}
    found = _facts_client(url, namespace, address).search(query, **options)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    click.echo(format_search(found))
