"""The `swarm` command (also `python -m cluster`), on click: ray already depends on it."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from cluster._private import env
from cluster._private.config import load_config
from cluster._private.errors import SwarmrayError

__all__ = ["main"]


def _namespace_option(f: Any) -> Any:
    return click.option(
        "--namespace",
        "-n",
        default=lambda: env.namespace() or "swarmray",
        show_default="swarmray",
        help="Ray namespace of the system.",
    )(f)


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
    from cluster._private import system

    config = load_config(config_path)  # fails before Ray starts
    started = system.connect_or_start(address, config.namespace)
    state = system.up(config)
    if started:
        system.mark_local_head(config.namespace)
    click.echo(format_status(state))
    click.echo(f"\nsystem {config.namespace!r} is up; `swarm status`, `swarm submit`, `swarm down`")


@cli.command()
@_namespace_option
@_address_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def status(namespace: str, address: str | None, as_json: bool) -> None:
    """Show swarms, agents, queue depths and task counts."""
    from cluster._private import system

    system.connect(address or "auto", namespace)
    state = system.status(namespace)
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
    namespace: str,
    address: str | None,
) -> None:
    """Submit a task for CAPABILITY; print its id, or with --wait its result."""
    from cluster._private.system import Client

    try:
        data = json.loads(payload)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint="--input") from None
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--input")
    client = Client(namespace, address or "auto")
    task_id = client.submit(capability, data, swarm=swarm, priority=priority, timeout_s=timeout_s)
    if not wait:
        click.echo(task_id)
        return
    result = client.result(task_id)
    click.echo(result.model_dump_json(indent=2))
    sys.exit(0 if result.ok else 1)


@cli.command()
@click.argument("task_id")
@click.option("--timeout-s", default=None, type=float, help="Seconds to wait (default: no limit).")
@_namespace_option
@_address_option
def result(task_id: str, timeout_s: float | None, namespace: str, address: str | None) -> None:
    """Print the result of TASK_ID, waiting for it to end."""
    from cluster._private.system import Client

    click.echo(Client(namespace, address or "auto").result(task_id, timeout_s).model_dump_json(indent=2))


@cli.command()
@_namespace_option
@_address_option
def down(namespace: str, address: str | None) -> None:
    """Remove everything `up` created, including a local head it started."""
    from cluster._private import system

    system.connect(address or "auto", namespace)
    for name in system.down(namespace):
        click.echo(f"removed {name}")


@cli.command()
@_config_option
@_address_option
def demo(config_path: str | None, address: str | None) -> None:
    """The main job: bring the system up, run a demo workload, print results, shut down."""
    from cluster._private.demo import run_demo

    sys.exit(run_demo(config_path, address))


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Left-aligned text columns with a header row."""
    cells = [[c.upper() for c in columns]] + [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells)
    return "\n".join(line.rstrip() for line in lines)


def format_status(state: dict[str, Any]) -> str:
    """The `swarm status` tables: one row per swarm, then one per agent."""
    swarms, agents = [], []
    for s in state["swarms"]:
        by_state: dict[str, int] = {}
        for a in s["agents"]:
            by_state[a["state"]] = by_state.get(a["state"], 0) + 1
            agents.append({**a, "swarm": s["swarm"]})
        swarms.append(
            {
                "swarm": s["swarm"],
                "health": s["health"].get("health", "?"),
                "queued": s["queued"],
                "running": s["running"],
                "done": s["tasks"]["succeeded"],
                "failed": s["tasks"]["failed"] + s["tasks"]["timed_out"],
                "agents": " ".join(f"{n} {k}" for k, n in sorted(by_state.items())),
                "strategy": s["supervision"]["strategy"],
                "restarts": "{restarts_in_window}/{max_restarts} in {period_s:g}s".format(**s["supervision"]),
                "capabilities": ", ".join(s["capabilities"]),
            }
        )
    notes = [
        f"{s['swarm']}: {s['supervision']['reason'] or s['health'].get('reason')}"
        for s in state["swarms"]
        if s["supervision"]["state"] == "failed" or s["health"].get("reason")
    ]
    return (
        f"namespace {state['namespace']}\n\n"
        + format_table(
            swarms,
            [
                "swarm",
                "health",
                "queued",
                "running",
                "done",
                "failed",
                "agents",
                "strategy",
                "restarts",
                "capabilities",
            ],
        )
        + "".join(f"\n  {note}" for note in notes)
        + "\n\n"
        + format_table(
            agents, ["agent", "swarm", "state", "node", "inflight", "done", "failed", "restarts", "reason"]
        )
        + (_format_ai(state["ai"]) if state.get("ai") else "")
    )


def _format_ai(ai: dict[str, Any]) -> str:
    line = f"\n\nAI service (OpenAI-compatible): {ai['url']}"
    if ai.get("smoke_test_models"):
        line += (
            f"\n  {', '.join(ai['smoke_test_models'])}: the smoke-test model (random weights, built "
            "locally): its text is noise; see README.md, 'AI service', to serve a real model"
        )
    return line


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
