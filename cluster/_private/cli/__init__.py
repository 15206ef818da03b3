"""The `swarm` command (also `python -m cluster`), on click: ray already depends on it.

One module per command group: `system` (up, status, down, demo), `tasks` (submit, result,
cancel, capabilities), `usage`, `facts`, `memory`, `keys`, `audit` and `mcp`; `options` holds what
they share. Every module loads with click and light modules only, so that `swarm --help` and a
usage error answer at once; what a command needs (Ray first) is imported inside its body.
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from cluster._private.cli import audit, facts, keys, mcp, memory, system, tasks, usage
from models._private.core import env
from models._private.core.errors import SwarmrayError

__all__ = ["cli", "main"]


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
        env.set_verbose()  # read where Ray is started and connected


for _command in (
    system.up,
    system.status,
    tasks.submit,
    usage.usage,
    tasks.result,
    tasks.capabilities,
    tasks.cancel,
    system.down,
    system.demo,
    facts.facts,
    memory.memory,
    keys.keys,
    audit.audit,
    mcp.mcp,
):
    cli.add_command(_command)


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
