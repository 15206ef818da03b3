"""The `swarm` command (also `python -m cluster`), on click: ray already depends on it."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING, Any

import click

from cluster._private.format import format_result, format_status, progress_bars
from cluster._private.usage import BY
from models._private.core import env
from models._private.core.errors import SwarmrayError
from models._private.key_scopes import SCOPES

if TYPE_CHECKING:
    from actors._private.task import TaskResult
    from cluster._private.facts_client import FactsClient

__all__ = ["main"]


# This module loads with click and light modules only, so that `swarm --help` and a usage error
# answer at once; what a command needs (Ray first) is imported when it runs, inside its body, or
# for these functions, on their first call.
def _on_call(module: str, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


load_config = _on_call("cluster._private.config", "load_config")
connect = _on_call("cluster._private.connection", "connect")
connect_or_start = _on_call("cluster._private.connection", "connect_or_start")
get = _on_call("cluster._private.connection", "get")
check_secrets = _on_call("cluster._private.lifecycle", "check_secrets")
last_namespace = _on_call("cluster._private.lifecycle", "last_namespace")
mark_local_head = _on_call("cluster._private.lifecycle", "mark_local_head")
up_system = _on_call("cluster._private.lifecycle", "up")
authority_of = _on_call("cluster._private.security", "authority_of")
parse_duration = _on_call("cluster._private.security", "parse_duration")


def _namespace_option(f: Any) -> Any:
    return click.option(
        "--namespace",
        "-n",
        default=None,
        help="Ray namespace of the system (default: the --config file's, $SWARMRAY_NAMESPACE, "
        "the last `swarm up`'s on this cluster, or swarmray).",
    )(f)


def _connect(namespace: str | None, address: str | None, config_path: str | None = None) -> str:
    """Connects to the cluster; returns the system's namespace: --namespace, else the --config
    file's, else $SWARMRAY_NAMESPACE, else the one the last `swarm up` on this cluster used,
    else swarmray."""
    if not namespace and config_path:
        namespace = load_config(config_path).namespace  # applies $SWARMRAY_NAMESPACE too
    namespace = namespace or env.namespace()
    connect(address or "auto", namespace or "swarmray")
    return namespace or last_namespace() or "swarmray"


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
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Also show Ray's own log lines (they go to Ray's log files otherwise).",
)
def cli(verbose: bool) -> None:
    """Run fleets of AI agents on a Ray cluster."""
    if verbose:
        os.environ["SWARMRAY_VERBOSE"] = "1"  # read where Ray is started and connected


@cli.command()
@_config_option
@_address_option
def up(config_path: str | None, address: str | None) -> None:
    """Bring the system up; start a local Ray head if none runs and no address is given."""
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


@cli.command()
@_config_option
@_namespace_option
@_address_option
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

    namespace = _connect(namespace, address, config_path)
    if watch:
        from cluster._private.watch import watch as watch_system

        try:
            watch_system(namespace, interval)
        except KeyboardInterrupt:
            pass
        return
    state = system_status(namespace)
    click.echo(json.dumps(state, indent=2, default=str) if as_json else format_status(state))


@cli.command()
@click.argument("capability")
@click.option("--input", "payload", default="{}", help="Task payload as a JSON object.")
@click.option("--swarm", default=None, help="Swarm to submit to (default: the registry picks).")
@click.option("--priority", default=0, show_default=True, help="Higher runs first.")
@click.option("--timeout-s", default=None, type=float, help="Per-attempt timeout.")
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--json", "as_json", is_flag=True, help="With --wait, print the whole result as JSON.")
@_namespace_option
@_address_option
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

    client = Client(_connect(namespace, address))
    task_id = client.submit(capability, data, swarm=swarm, priority=priority, timeout_s=timeout_s)
    if not wait:
        click.echo(task_id)
        return
    _print_result(client.result(task_id), as_json)


def _print_result(result: TaskResult, as_json: bool) -> None:
    """How it ended, in how long, where, then its output; with `as_json` the whole TaskResult."""
    click.echo(result.model_dump_json(indent=2) if as_json else format_result(result))
    sys.exit(0 if result.ok else 1 if result.status.final else 3)


@cli.command()
@click.option(
    "--by", type=click.Choice(BY), default="swarm", show_default=True, help="Rows per swarm, key or model."
)
@click.option("--since", default=None, help="Only what was spent since: 15m, 2h, 1d, or an ISO 8601 time.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows instead of a table.")
@_address_option
@_namespace_option
def usage(by: str, since: str | None, as_json: bool, namespace: str | None, address: str | None) -> None:
    """Tokens and cost spent through the AI service: by swarm (the tasks' own), key or model."""
    from cluster._private.security import parse_since
    from cluster._private.usage import format_usage
    from cluster._private.usage import usage as usage_of

    rows = usage_of(_connect(namespace, address), by, parse_since(since) if since else None)
    click.echo(json.dumps(rows, indent=2) if as_json else format_usage(rows, by))


@cli.command()
@click.argument("task_id")
@click.option("--timeout-s", default=None, type=float, help="Seconds to wait (default: no limit).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@_namespace_option
@_address_option
def result(
    task_id: str, timeout_s: float | None, as_json: bool, namespace: str | None, address: str | None
) -> None:
    """Print the result of TASK_ID, waiting for it to end: how it ended, in how long and where,
    then its output (or error).

    Exit status: 0 succeeded, 1 failed, timed out or cancelled, 3 not ended within --timeout-s.
    """
    from cluster._private.client import Client

    _print_result(Client(_connect(namespace, address)).result(task_id, timeout_s), as_json)


@cli.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, with each payload's JSON Schema.")
@_namespace_option
@_address_option
def capabilities(name: str | None, as_json: bool, namespace: str | None, address: str | None) -> None:
    """List the capabilities tasks can ask for; with NAME (or a family such as `memory.`), what
    its payload takes: each field's type, whether it is required, and what it means."""
    from cluster._private.client import Client
    from cluster._private.format import format_capabilities

    entries = Client(_connect(namespace, address)).capabilities(name)
    click.echo(
        json.dumps(entries, indent=2) if as_json else format_capabilities(entries, fields=name is not None)
    )


@cli.command()
@click.argument("task_id")
@_namespace_option
@_address_option
def cancel(task_id: str, namespace: str | None, address: str | None) -> None:
    """Cancel TASK_ID if it has not ended (exit status 1 when it already had)."""
    from cluster._private.client import Client

    client = Client(_connect(namespace, address))
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
    from cluster._private.lifecycle import down as down_system

    namespace = _connect(namespace, address, config_path)
    for name in down_system(namespace):
        click.echo(f"removed {name}")


@cli.command()
@_config_option
@_address_option
def demo(config_path: str | None, address: str | None) -> None:
    """The main job: bring the system up, run a demo workload, print results, shut down."""
    from cluster._private.demo import run_demo

    sys.exit(run_demo(config_path, address))


@cli.group()
def facts() -> None:
    """Put documents into the facts service and search it."""


def _facts_client(url: str | None, namespace: str | None, address: str | None) -> FactsClient:
    from cluster._private.facts_client import FactsClient

    if url:  # a service named by URL: the key from $SWARMRAY_API_KEY, if any
        return FactsClient(url, api_key=os.environ.get("SWARMRAY_API_KEY"))
    return FactsClient.of_system(_connect(namespace, address))


def _facts_options(f: Any) -> Any:
    f = click.option("--url", default=None, help="The facts service's …/v1 root (default: the system's).")(f)
    return _address_option(_namespace_option(f))


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


@cli.group()
def memory() -> None:
    """The swarms' memory stores."""


@memory.command(name="load")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--store", required=True, help="The memory store: a swarm's name, or global.")
@click.option(
    "--in", "into", default=None, help="The namespace of records that name none (default: the store's)."
)
@click.option("--batch", default=256, show_default=True, type=click.IntRange(1), help="Records a write.")
@_address_option
@_namespace_option
def memory_load(
    path: str, store: str, into: str | None, batch: int, namespace: str | None, address: str | None
) -> None:
    """Load PATH, a JSONL file of records (text, and optionally id, namespace, metadata, tier,
    importance, ttl_s), into a memory store; every line is checked before anything is written."""
    from cluster._private.memory_load import load_records, records_of_file

    system = _connect(namespace, address)
    records = records_of_file(path, into or store)
    with progress_bars(transient=False) as progress:
        stored = load_records(system, store, records, batch, progress)
    click.echo(f"{stored} records stored in memory:{store}")


@cli.group()
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
@_address_option
@_namespace_option
def keys_create(name: str, scopes: str, models: str | None, namespaces: str | None, **kw: Any) -> None:
    """Creates a key and prints its secret: this is the only time it is shown."""
    if unknown := [x for x in _csv(scopes) or [] if x not in SCOPES]:
        raise click.BadParameter(
            f"unknown scope {unknown[0]!r}; scopes are {', '.join(SCOPES)}", param_hint="--scopes"
        )
    spec = {
        "name": name,
        "scopes": _csv(scopes),
        "models": _csv(models),
        "namespaces": _csv(namespaces),
        "rpm": kw["rpm"],
        "tpm": kw["tpm"],
        "budget_tokens": kw["budget_tokens"],
        "budget_usd": kw["budget_usd"],
        "budget_period_s": parse_duration(kw["budget_period"]) if kw["budget_period"] else None,
        "expires_in_s": parse_duration(kw["expires_in"]) if kw["expires_in"] else None,
    }
    authority = authority_of(_connect(kw["namespace"], kw["address"]))
    made = get(authority.create.remote(spec, "cli"))  # not retried: a retry could make two
    click.echo(made["key"])
    click.echo(f"key {made['record']['id']} ({name}): store the secret above now; it is not kept", err=True)


@keys.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_address_option
@_namespace_option
def keys_list(as_json: bool, namespace: str | None, address: str | None) -> None:
    """Every key, with a hint of its secret (never the secret)."""
    from cluster._private.connection import call
    from cluster._private.security import format_keys

    records = call(lambda: authority_of(_connect(namespace, address)).list.remote())
    click.echo(json.dumps(records, indent=2) if as_json else format_keys(records))


@keys.command(name="revoke")
@click.argument("key_id")
@_address_option
@_namespace_option
def keys_revoke(key_id: str, namespace: str | None, address: str | None) -> None:
    """Stops a key on every replica (within about a second)."""
    from cluster._private.connection import call

    call(lambda: authority_of(_connect(namespace, address)).revoke.remote(key_id, "cli"))
    click.echo(f"key {key_id} revoked")


@keys.command(name="rotate")
@click.argument("key_id")
@_address_option
@_namespace_option
def keys_rotate(key_id: str, namespace: str | None, address: str | None) -> None:
    """Gives a key a new secret (printed once); the old one stops working."""
    made = get(authority_of(_connect(namespace, address)).rotate.remote(key_id, "cli"))
    click.echo(made["key"])


@cli.group()
def audit() -> None:
    """The tamper-evident audit log of both services."""


@audit.command(name="pubkey")
@_address_option
@_namespace_option
def audit_pubkey(namespace: str | None, address: str | None) -> None:
    """Prints the public key (PEM) the log's checkpoints are signed with."""
    from cluster._private.connection import call

    click.echo(call(lambda: authority_of(_connect(namespace, address)).public_key.remote()), nl=False)


def _audit_options(f: Any) -> Any:
    f = click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")(f)
    f = click.option(
        "--dir", "directory", default=None, help="Read this copy of the log's directory instead."
    )(f)
    f = click.option("--url", default=None, help="A service's …/v1 root (default: the system's).")(f)
    return _address_option(_namespace_option(f))


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
    from models._private.audit import read_records

    after = parse_since(since) if since else None
    if opts["directory"]:
        records = read_records(opts["directory"], key_id, after, route)[-count:]
    else:
        if opts["url"]:  # a service named by URL: the key from $SWARMRAY_API_KEY, if any
            url, key = opts["url"], os.environ.get("SWARMRAY_API_KEY")
        else:
            system = _connect(opts["namespace"], opts["address"])
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
@_address_option
@_namespace_option
def audit_verify(
    pubkey: Any, directory: str | None, since: str | None, namespace: str | None, address: str | None
) -> None:
    """Re-hashes every writer's chain and checks its links, sequence and signed checkpoints;
    exits 1 at the first bad line of any writer."""
    from cluster._private.security import format_verdicts, parse_since, verify_audit

    system = None if directory else _connect(namespace, address)
    verdicts = verify_audit(
        system, pubkey.read() if pubkey else None, directory, parse_since(since) if since else None
    )
    click.echo(format_verdicts(verdicts))
    if not verdicts or not all(v.ok for v in verdicts):
        sys.exit(1)


def main() -> None:
    """Entry point of the `swarm` console script."""
    # As `python -m cluster` does: the working directory comes first on sys.path, so a user's
    # own agents (`my_agents.shout:Shout`) import here, and in the workers of a local cluster,
    # which Ray gives the driver's sys.path.
    if sys.path[0] != os.getcwd() and "" not in sys.path[:1]:
        sys.path.insert(0, os.getcwd())
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
        click.echo(f"error: {_one_line(e)} (SWARMRAY_LOG_LEVEL=DEBUG shows more)", err=True)
        sys.exit(2)


def _one_line(e: Exception) -> str:
    """An unexpected error in one line: its type and first line, or, for an actor whose
    constructor raised, that error (the last line of the traceback Ray puts in its text)."""
    lines = str(e).strip().splitlines() or [""]
    if getattr(e, "_actor_init_failed", False):  # Ray's ActorDiedError keeps no cause but text
        return f"an actor failed to start: {lines[-1].strip()}"
    return f"{type(e).__name__}: {lines[0]}"
