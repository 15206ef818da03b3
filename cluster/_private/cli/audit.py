"""`swarm audit pubkey`, `tail`, `search` and `verify`: the services' audit log."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from cluster._private.cli.options import address_option, connect_system, namespace_option
from models._private.core import env

__all__ = ["audit"]


@click.group()
def audit() -> None:
    """The tamper-evident audit log of both services."""


@audit.command(name="pubkey")
@address_option
@namespace_option
def audit_pubkey(namespace: str | None, address: str | None) -> None:
    """Prints the public key (PEM) the log's checkpoints are signed with."""
    from cluster._private.connection import call
    from cluster._private.security import authority_of

    click.echo(call(lambda: authority_of(connect_system(namespace, address)).public_key.remote()), nl=False)


def _audit_options(f: Any) -> Any:
    f = click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")(f)
    f = click.option(
        "--dir", "directory", default=None, help="Read this copy of the log's directory instead."
    )(f)
    f = click.option(
        "--url",
        default=None,
        help="A service's …/v1 root (default: the system's); a key goes over plain http to another "
        "machine only with SWARMRAY_INSECURE_HTTP=1.",
    )(f)
    return address_option(namespace_option(f))


def _audit(
    opts: dict[str, Any],
    count: int,
    key_id: str | None = None,
    since: str | None = None,
    route: str | None = None,
) -> None:
    """Prints the latest `count` records: over HTTP with the user's key (scope admin; a key
    with model or namespace lists sees only records about them), or from a copy (--dir)."""
    from cluster._private.credentials import user_key
    from cluster._private.security import audit_over_http, audit_url, format_audit, parse_since
    from serve._private.auth.audit_verify import read_records

    after = parse_since(since) if since else None
    if opts["directory"]:
        records = read_records(opts["directory"], key_id, after, route)[-count:]
    else:
        if opts["url"]:  # a service named by URL: the key from $SWARMRAY_API_KEY, if any
            url, key = opts["url"], env.api_key()
        else:
            system = connect_system(opts["namespace"], opts["address"])
            url, key = audit_url(system), user_key(system)
        page = audit_over_http(url, key, key_id, after, route, count)
        records = page["data"]
        if page["has_more"]:
            click.echo(f"(the latest {count} shown; older records match too: --since or --count)", err=True)
    click.echo("\n".join(json.dumps(r) for r in records) if opts["as_json"] else format_audit(records))


@audit.command(name="tail")
@click.option(
    "-c", "--count", default=20, show_default=True, type=click.IntRange(1, 1000), help="Records shown."
)
@_audit_options
def audit_tail(count: int, **opts: Any) -> None:
    """The latest records of every writer, merged by time."""
    _audit(opts, count)


@audit.command(name="search")
@click.option("--key", "key_id", default=None, help="Only this key's records (its id).")
@click.option("--since", default=None, help="Only records since: 15m, 2h, 1d, or an ISO 8601 time.")
@click.option("--route", default=None, help="Only routes that start so, e.g. /v1/namespaces/default.")
@click.option(
    "-c", "--count", default=1000, show_default=True, type=click.IntRange(1, 1000), help="Most shown."
)
@_audit_options
def audit_search(key_id: str | None, since: str | None, route: str | None, count: int, **opts: Any) -> None:
    """Records of one key, a time range or a route, from every writer, merged by time."""
    _audit(opts, count, key_id, since, route)


@audit.command(name="verify")
@click.option("--pubkey", type=click.File(), default=None, help="A PEM public key to check against.")
@click.option(
    "--dir", "directory", default=None, help="Verify this copy of the log offline (needs --pubkey)."
)
@click.option(
    "--since",
    default=None,
    help="Check only from each chain's last checkpoint signed before this: 15m, 2h, 1d, or an ISO 8601 time.",
)
@address_option
@namespace_option
def audit_verify(
    pubkey: Any, directory: str | None, since: str | None, namespace: str | None, address: str | None
) -> None:
    """Re-hashes every writer's chain and checks its links, sequence and signed checkpoints;
    exits 1 at the first bad line of any writer."""
    from cluster._private.security import format_verdicts, parse_since, verify_audit

    system = None if directory else connect_system(namespace, address)
    verdicts = verify_audit(
        system, pubkey.read() if pubkey else None, directory, parse_since(since) if since else None
    )
    click.echo(format_verdicts(verdicts))
    if not verdicts or not all(v.ok for v in verdicts):
        sys.exit(1)
