"""The token and cost ledger: what was spent through the AI service, summed by time bucket and by
the owner's dimensions (a queen's capability; the gateway's key and model).

Buckets are a minute wide for the last day, an hour for the last 31 days, a day before that,
so a ledger stays small however long it runs, and `totals(since=…)` is exact to the width of
the bucket `since` falls in. Cost is counted in whole micro-dollars, so sums taken in any
order agree to the last digit.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field, NonNegativeInt

__all__ = ["FIELDS", "Spent", "UsageLedger"]

FIELDS = ("requests", "prompt_tokens", "completion_tokens", "cost_microusd")
_MINUTE, _HOUR, _DAY = 60, 3600, 86400
_ROLL_EVERY = 1000  # adds between two roll-ups of old buckets


class Spent(BaseModel):
    """What one piece of work spent through the AI service."""

    requests: NonNegativeInt = Field(0, description="AI service requests made.")
    prompt_tokens: NonNegativeInt = 0
    completion_tokens: NonNegativeInt = 0
    cost_microusd: NonNegativeInt = Field(0, description="By the service's price table, in micro-dollars.")

    def add(self, other: Spent) -> None:
        """Adds `other` into this one."""
        for name in FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def empty(self) -> bool:
        return not any(getattr(self, name) for name in FIELDS)


def _sum_into(table: dict[Any, list[int]], key: Any, values: Sequence[int]) -> None:
    row = table.setdefault(key, [0] * len(FIELDS))
    for i, n in enumerate(values):
        row[i] += n


def _width_s(age_s: float) -> int:
    return _MINUTE if age_s < _DAY else _HOUR if age_s < 31 * _DAY else _DAY


class UsageLedger:
    """Sums of `FIELDS` by (bucket start, dimensions).

    Args:
        dimensions: The names of the dimensions every entry carries, e.g. ("key", "model").
    """

    def __init__(self, dimensions: Sequence[str]):
        self.dimensions = tuple(dimensions)
        self.buckets: dict[tuple[int, tuple[str, ...]], list[int]] = {}
        self._adds = 0

    def add(self, at: float, dims: Sequence[str], spent: Spent) -> None:
        """Counts `spent` at time `at` under `dims` (one value per dimension)."""
        if len(dims) != len(self.dimensions):
            raise ValueError(f"expected values for {self.dimensions}, got {tuple(dims)}")
        if spent.empty:
            return
        start = int(at) - int(at) % _MINUTE
        _sum_into(self.buckets, (start, tuple(dims)), [getattr(spent, name) for name in FIELDS])
        self._adds += 1
        if self._adds % _ROLL_EVERY == 0:
            self.roll(time.time())

    def roll(self, now: float) -> None:
        """Merges buckets into wider ones as they age (see the module doc)."""
        merged: dict[tuple[int, tuple[str, ...]], list[int]] = {}
        for (start, dims), row in self.buckets.items():
            width = _width_s(now - start)
            _sum_into(merged, (start - start % width, dims), row)
        self.buckets = merged

    def totals(
        self, by: Sequence[str] = (), since: float | None = None, where: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Sums grouped by the dimensions `by` (none: one grand total), over buckets that start
        at or after `since` (or that `since` falls in) and whose dimensions match `where`;
        sorted by the group."""
        index = [self.dimensions.index(d) for d in by]  # ValueError for an unknown dimension
        match = [(self.dimensions.index(d), value) for d, value in (where or {}).items()]
        groups: dict[tuple[str, ...], list[int]] = {}
        for (start, dims), row in self.buckets.items():
            if since is not None and start + _width_s(time.time() - start) <= since:
                continue
            if any(dims[i] != value for i, value in match):
                continue
            _sum_into(groups, tuple(dims[i] for i in index), row)
        return [
            {**dict(zip(by, key, strict=True)), **dict(zip(FIELDS, row, strict=True))}
            for key, row in sorted(groups.items())
        ]

    def dump(self) -> list[list[Any]]:
        """The buckets as JSON-able rows [start, [dims], [fields]]."""
        return [[start, list(dims), row] for (start, dims), row in self.buckets.items()]

    def load(self, rows: Iterable[Sequence[Any]]) -> None:
        """Replaces the buckets by `dump`'s rows."""
        self.buckets = {(int(start), tuple(dims)): [int(n) for n in row] for start, dims, row in rows}
