"""`swarm status --watch`: a live view (rich) of swarms, agents, queues, task rates and the
services, read from `status` every few seconds."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cluster._private.format import FACTS_COLUMNS, SWARM_COLUMNS, agents_by_state, facts_rows, swarm_row
from cluster._private.status import status

__all__ = ["render", "watch"]

_HEALTH = {"healthy": "green", "degraded": "yellow", "failed": "red", "unreachable": "red"}
_AGENTS = {"alive": "green", "pending": "yellow", "restarting": "yellow", "dead": "red"}


def _rate(now: int, before: int | None, seconds: float) -> str:
    return "-" if before is None or seconds <= 0 else f"{max(0, now - before) / seconds:.1f}"


def _swarms(state: dict[str, Any], previous: dict[str, Any] | None, seconds: float) -> Table:
    before = {s["swarm"]: swarm_row(s) for s in (previous or {}).get("swarms", [])}
    table = Table(title="swarms", title_justify="left", expand=True)
    for column in [*SWARM_COLUMNS, "done/s", "failed/s", "agents", "restarts"]:
        table.add_column(column, justify="left" if column in ("swarm", "health", "agents") else "right")
    for s in state["swarms"]:
        row, old = swarm_row(s), before.get(s["swarm"])
        cells: list[RenderableType] = [str(row[c]) for c in SWARM_COLUMNS]
        cells[SWARM_COLUMNS.index("health")] = Text(row["health"], style=_HEALTH.get(row["health"], ""))
        table.add_row(
            *cells,
            _rate(row["done"], None if old is None else old["done"], seconds),
            _rate(row["failed"], None if old is None else old["failed"], seconds),
            Text(" ").join(Text(f"{n} {k}", style=_AGENTS.get(k, "")) for k, n in agents_by_state(s).items()),
            "{restarts_in_window}/{max_restarts}".format(**s["supervision"]),
        )
    return table


def _queues(state: dict[str, Any]) -> Table:
    table = Table(title="queues", title_justify="left", expand=True)
    for column in ("swarm", "capability", "waiting", "agents alive", "in flight"):
        table.add_column(column, justify="left" if column in ("swarm", "capability") else "right")
    for s in state["swarms"]:
        for capability in s["capabilities"]:
            serving = [a for a in s["agents"] if capability in a["capabilities"]]
            table.add_row(
                s["swarm"],
                capability,
                str(s["queue_depth"].get(capability, 0)),
                str(sum(a["state"] == "alive" for a in serving)),
                str(sum(a["inflight"] for a in serving)),
            )
    return table


def _services(state: dict[str, Any]) -> RenderableType | None:
    parts: list[RenderableType] = []
    if ai := state.get("ai"):
        parts.append(Text(f"AI service {ai['url']}: " + ", ".join(ai.get("models", {})), style="bold"))
    if facts := state.get("facts"):
        parts.append(Text(f"facts service {facts['url']}", style="bold"))
        if facts.get("error"):
            parts.append(Text(facts["error"], style="red"))
        else:
            table = Table(expand=True)
            for column in FACTS_COLUMNS:
                table.add_column(column, justify="left" if column == "namespace" else "right")
            for row in facts_rows(facts):
                table.add_row(*(str(row[c]) for c in FACTS_COLUMNS))
            parts.append(table)
    return Group(*parts) if parts else None


def render(
    state: dict[str, Any], previous: dict[str, Any] | None = None, seconds: float = 0.0
) -> RenderableType:
    """One frame: swarms (with task rates over the `seconds` since `previous`), queues per
    capability, missing actors, and the services."""
    parts: list[RenderableType] = [
        Text(f"system {state['namespace']}  ·  {time.strftime('%H:%M:%S')}", style="bold"),
        _swarms(state, previous, seconds),
        _queues(state),
    ]
    parts += [Text(f"{m['swarm']}: {m['reason']}", style="red") for m in state.get("missing", [])]
    if (services := _services(state)) is not None:
        parts.append(services)
    return Group(*parts)


def watch(
    namespace: str, interval_s: float = 2.0, rounds: int | None = None, console: Console | None = None
) -> None:
    """Shows `render` of the system's status, read again every `interval_s`, for `rounds`
    frames (None: until interrupted)."""
    state, seen = status(namespace), time.monotonic()
    with Live(render(state), console=console, refresh_per_second=4, transient=False) as live:
        frame = 1
        while rounds is None or frame < rounds:
            time.sleep(interval_s)  # the view's own pace
            previous, before = state, seen
            state, seen = status(namespace), time.monotonic()
            live.update(render(state, previous, seen - before))
            frame += 1
