"""`swarm keys create`, `list`, `revoke` and `rotate`: the services' API keys."""

from __future__ import annotations

import json
from typing import Any

import click

from cluster._private.cli.options import address_option, connect_system, namespace_option
from models._private.core.scopes import SCOPES

__all__ = ["keys"]


@click.group()
def keys() -> None:
    """API keys of the system's services (auth on): create, list, revoke, rotate."""


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@keys.command(name="create")
@click.option("--name", required=True, help="What the key is for.")
@click.option("--scopes", required=True, help=f"Comma-separated, of: {', '.join(SCOPES)}.")
@click.option(
    "--models",
    default=None,
    help="Comma-separated models it may use, of those the AI service serves (names, aliases; default: all).",
)
@click.option(
    "--namespaces",
    default=None,
    help="Comma-separated facts namespaces it may use, existing or not yet written (default: all).",
)
@click.option(
    "--swarm",
    "swarms",
    multiple=True,
    help="A swarm (fnmatch pattern) whose capabilities and memory it may use over MCP; repeatable "
    "(default: all).",
)
@click.option(
    "--capability",
    "capabilities",
    multiple=True,
    help="An MCP tool (fnmatch pattern, e.g. 'text.*') it may see and call; repeatable (default: all).",
)
@click.option("--rpm", type=click.IntRange(1), default=None, help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(1), default=None, help="Tokens per minute.")
@click.option("--budget-tokens", type=click.IntRange(1), default=None, help="Tokens per budget period.")
@click.option(
    "--budget-usd",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="US dollars per budget period, priced by the AI service's `prices`.",
)
@click.option("--budget-period", default=None, help="Both budgets' period: 1d, 30d, 12h … (default 1d).")
@click.option("--expires-in", default=None, help="Lifetime: 90s, 12h, 30d, 2w …")
@address_option
@namespace_option
def keys_create(name: str, scopes: str, models: str | None, namespaces: str | None, **kw: Any) -> None:
    """Creates a key and prints its secret: this is the only time it is shown."""
    if unknown := [x for x in _csv(scopes) or [] if x not in SCOPES]:
        raise click.BadParameter(
            f"unknown scope {unknown[0]!r}; scopes are {', '.join(SCOPES)}", param_hint="--scopes"
        )
    from cluster._private.connection import get
    from cluster._private.security import authority_of, parse_duration

    spec = {
        "name": name,
        "scopes": _csv(scopes),
        "models": _csv(models),
        "namespaces": _csv(namespaces),
        "swarms": list(kw["swarms"]) or None,
        "capabilities": list(kw["capabilities"]) or None,
        "rpm": kw["rpm"],
        "tpm": kw["tpm"],
        "budget_tokens": kw["budget_tokens"],
        "budget_usd": kw["budget_usd"],
        "budget_period_s": parse_duration(kw["budget_period"]) if kw["budget_period"] else None,
        "expires_in_s": parse_duration(kw["expires_in"]) if kw["expires_in"] else None,
    }
    authority = authority_of(connect_system(kw["namespace"], kw["address"]))
    made = get(authority.create.remote(spec, "cli"))  # not retried: a retry could make two
    click.echo(made["key"])
    click.echo(f"key {made['record']['id']} ({name}): store the secret above now; it is not kept", err=True)


@keys.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@address_option
@namespace_option
def keys_list(as_json: bool, namespace: str | None, address: str | None) -> None:
    """Every key, with a hint of its secret (never the secret)."""
    from cluster._private.connection import call
    from cluster._private.security import authority_of, format_keys

    records = call(lambda: authority_of(connect_system(namespace, address)).list.remote())
    click.echo(json.dumps(records, indent=2) if as_json else format_keys(records))


@keys.command(name="revoke")
@click.argument("key_id")
@address_option
@namespace_option
def keys_revoke(key_id: str, namespace: str | None, address: str | None) -> None:
    """Stops a key on every replica (within about a second)."""
    from cluster._private.connection import call
    from cluster._private.security import authority_of

    call(lambda: authority_of(connect_system(namespace, address)).revoke.remote(key_id, "cli"))
    click.echo(f"key {key_id} revoked")


@keys.command(name="rotate")
@click.argument("key_id")
@address_option
@namespace_option
def keys_rotate(key_id: str, namespace: str | None, address: str | None) -> None:
    """Gives a key a new secret (printed once); the old one stops working."""
    from cluster._private.connection import get
    from cluster._private.security import authority_of

    made = get(authority_of(connect_system(namespace, address)).rotate.remote(key_id, "cli"))
    click.echo(made["key"])
