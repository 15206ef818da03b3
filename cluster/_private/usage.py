"""`swarm usage`: the token and cost ledger, by swarm (the queens' sums of their tasks' usage) or
by key or model (the AI service's sums, kept by the system's key authority)."""

from __future__ import annotations

from typing import Any, Literal

from cluster._private.format import format_table
from models._private.core.errors import SwarmrayError

__all__ = ["BY", "OUTSIDE_TASKS", "format_usage", "usage"]

BY = ("swarm", "key", "model")
# The row of the per-swarm view for what the AI service charged outside the running swarms'
# tasks: requests made with a user's key, the facts service's own extraction, attempts that
# timed out, and the tasks of queens taken down since (`down` purges their journals).
OUTSIDE_TASKS = "(outside tasks)"
By = Literal["swarm", "key", "model"]


def usage(namespace: str, by: By = "swarm", since: float | None = None) -> list[dict[str, Any]]:
    """Rows of requests, prompt and completion tokens and cost (micro-dollars and USD), one per
    swarm and capability (`by="swarm"`), key or model, since a Unix time; the last row, `total`,
    sums them. Per swarm, a row `(outside tasks)` holds what the AI service charged besides the
    running swarms' tasks, so that every view's total is the service's.

    Raises:
        SystemNotFoundError: nothing runs in `namespace`.
        SwarmrayError: `by` is key or model and the system runs no AI service.
    """
    # Here, not above: the `swarm` CLI reads BY at load, which must not import Ray.
    from cluster._private.connection import call, existing, registry_of
    from models._private.core import names
    from models._private.core.names import authority_name
    from models._private.core.usage import FIELDS

    authority = existing(authority_name(namespace), namespace)
    if by == "swarm":
        registry = registry_of(namespace)
        swarms = sorted(call(registry.system_config.remote).get("swarms", {}))
        queens = [q for s in swarms if (q := existing(names.queen(s), namespace)) is not None]
        rows = [row for q in queens for row in call(lambda q=q: q.usage.remote(["capability"], since))]
        if authority is not None:  # so that the views add up: what the service counted besides
            service = call(lambda: authority.usage_totals.remote([], since))
            rest = {n: max(0, sum(r[n] for r in service) - sum(r[n] for r in rows)) for n in FIELDS}
            if any(rest.values()):
                rows.append({"swarm": OUTSIDE_TASKS, "capability": None, **rest})
    else:
        if authority is None:
            raise SwarmrayError(f"system {namespace!r} runs no AI service, so it keeps no ledger by {by}")
        rows = call(lambda: authority.usage_totals.remote([by], since))
    total = {name: sum(r[name] for r in rows) for name in FIELDS}
    return [{**r, "cost_usd": r["cost_microusd"] / 1e6} for r in [*rows, {by: "total", **total}]]


def format_usage(rows: list[dict[str, Any]], by: By) -> str:
    """The ledger as a table."""
    group = {"swarm": ["swarm", "capability"], "key": ["key", "name"], "model": ["model"]}[by]
    shown = [
        {
            **{g: r.get(g) or "" for g in group},
            "requests": r["requests"],
            "prompt tokens": r["prompt_tokens"],
            "completion tokens": r["completion_tokens"],
            "cost (USD)": f"{r['cost_usd']:.6f}",
        }
        for r in rows
    ]
    return format_table(shown, [*group, "requests", "prompt tokens", "completion tokens", "cost (USD)"])
