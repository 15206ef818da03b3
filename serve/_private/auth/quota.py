"""Exact per-key limits across gateway replicas: one ledger decides, replicas spend leases.

A key's limits are counters over sliding windows: `requests` (rpm, 60 s), `tokens` (tpm, 60 s),
`budget` (budget_tokens, budget_period_s) and `cost` (budget_usd, budget_period_s, counted in
micro-dollars so that every counter is whole units). The `Ledger` (held by the key authority) is the
one place that grants units; a unit granted is spent or given back, never granted twice, so the
sum spent over all replicas never exceeds the limit.

Sliding, not calendar: a window is counted in `SLOTS` slots of `period / SLOTS` seconds, and a
unit granted in a slot counts against the limit until `SLOTS` whole slots have passed after its
own: between one period and one slot more (a day's budget: up to 24 h 24 min). A unit may be
spent only in the slot it was granted in (a lease ends with its slot), so whatever period-long
span one looks at, at most the limit was spent in it: "$5 a day" is $5 in any 24 hours, not $5
before midnight and $5 more after it.

So that the common request asks nobody, a replica asks for more than it needs (a lease of
`lease_share` of the limit) and spends the rest locally, until its slot ends; what is left then goes
back with its next ask (`release` before the grant), or a steady trickle would strand most of each
lease, counted for a whole period unspent. A release lost (or a replica that dies holding a lease)
leaves units counted until they age out: fewer admitted, never more. Leases would let one
replica hold units another needs; so once a window is tight (less than `tight_share` of the limit
left), the ledger grants only what is asked, and tells the replica, which gives its unspent lease
back: from then on every request of that key asks the ledger, and exactly the limit is admitted
whatever replicas the requests land on. A replica asks for one lease of a key at a time (its
other requests wait and spend it), so it never holds more than one lease's surplus: a replica
that goes idle holding one, while the window goes tight, leaves at most that much unadmitted
(never more admitted). tests/unit/test_spender.py runs 250 requests over two replicas in
random interleavings against a limit of 100: exactly 100 pass each time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["COUNTERS", "SLOTS", "Grant", "Ledger", "limit_of", "period_of", "window_of"]

# counter -> (the KeyRecord field of its limit, its window in seconds or the field of it)
COUNTERS: dict[str, tuple[str, float | str]] = {
    "requests": ("rpm", 60.0),
    "tokens": ("tpm", 60.0),
    "budget": ("budget_tokens", "budget_period_s"),
    "cost": ("budget_usd", "budget_period_s"),
}
SLOTS = 60  # a sliding window is counted in this many slots of its period
_MICRO = 1_000_000  # the cost counter's units in a dollar
_DEFAULT_PERIOD_S = 86400.0  # a budget without a period counts over one day


def limit_of(record: Any, counter: str) -> int | None:
    """The key's limit of `counter` in the counter's units, or None when it has none."""
    value = getattr(record, COUNTERS[counter][0])
    if value is None:
        return None
    return round(value * _MICRO) if counter == "cost" else int(value)


def period_of(record: Any, counter: str) -> float:
    """The length of `counter`'s window for this key, in seconds."""
    period = COUNTERS[counter][1]
    return period if isinstance(period, float) else getattr(record, period) or _DEFAULT_PERIOD_S


def window_of(now: float, period_s: float) -> int:
    """The slot `now` falls in, for a window of `period_s` (the ledger's unit of a lease)."""
    return int(now // (period_s / SLOTS))


@dataclass
class Grant:
    """What the ledger granted: `units` (0: refused) and the slot they belong to; whether the
    window is tight (give leases back, ask exactly); `retry_after_s`, for a refusal, when enough
    units stop counting (infinite when `n` exceeds the whole limit); and `lease_s`, how long the
    units may be spent (until their slot ends)."""

    units: int
    window: int
    tight: bool
    retry_after_s: float
    lease_s: float


class Ledger:
    """Units granted per (key, counter) and slot of the counter's window.

    Args:
        lease_share: A lease's size, as a share of the limit (at least what is asked).
        tight_share: Below this share of the limit left, grant only what is asked.
    """

    def __init__(self, lease_share: float = 0.05, tight_share: float = 0.2):
        self.lease_share, self.tight_share = lease_share, tight_share
        self._granted: dict[tuple[str, str], dict[int, int]] = {}  # (key, counter) -> slot -> units
        self._periods: dict[tuple[str, str], float] = {}  # (key, counter) -> its window, once asked

    def acquire(
        self, key_id: str, counter: str, limit: int, period_s: float, n: int, now: float, force: bool = False
    ) -> Grant:
        """Grants `n` units or more (a lease), or none when fewer are left in the window that
        ends now. `force` grants exactly `n` whatever is left: usage found after the fact,
        beyond a reservation."""
        width = period_s / SLOTS
        slot = int(now // width)
        slots = self._granted.setdefault((key_id, counter), {})
        self._periods[(key_id, counter)] = period_s
        for old in [s for s in slots if s < slot - SLOTS]:  # counted a whole period: gone
            del slots[old]
        lease_s = (slot + 1) * width - now
        left = limit - sum(slots.values())
        if force:
            slots[slot] = slots.get(slot, 0) + n
            return Grant(n, slot, True, 0.0, lease_s)
        if n > left:
            retry = math.inf if n > limit else self._freed_in(slots, n - left, width, now)
            return Grant(0, slot, True, retry, lease_s)
        tight = left - n < self.tight_share * limit
        units = n if tight else min(left, max(n, math.ceil(self.lease_share * limit)))
        slots[slot] = slots.get(slot, 0) + units
        return Grant(units, slot, tight or left - units < self.tight_share * limit, 0.0, lease_s)

    @staticmethod
    def _freed_in(slots: dict[int, int], needed: int, width: float, now: float) -> float:
        # Seconds until the oldest slots stop counting with at least `needed` units in them.
        freed = 0
        for slot in sorted(slots):
            freed += slots[slot]
            if freed >= needed:
                return max(0.0, (slot + SLOTS + 1) * width - now)
        return math.inf  # cannot happen: `needed` is at most what the slots hold

    def release(self, key_id: str, counter: str, window: int, n: int) -> None:
        """Units granted in slot `window` and not spent; ignored once the slot stops counting."""
        slots = self._granted.get((key_id, counter), {})
        if window in slots:
            slots[window] = max(0, slots[window] - n)

    def restore(self, key_id: str, counter: str, window: int, used: int) -> None:
        """Units granted in slot `window` before a restart (the authority's journal). Of several
        counts of a slot the largest is kept: units given back are not journaled, so a count may
        be more than was spent (fewer admitted after a restart), never less."""
        slots = self._granted.setdefault((key_id, counter), {})
        slots[window] = max(slots.get(window, 0), used)

    def used(self, key_id: str, counter: str, window: int) -> int:
        """Units granted in slot `window`."""
        return self._granted.get((key_id, counter), {}).get(window, 0)

    def dump(self, now: float) -> list[list[Any]]:
        """Every slot that still counts at `now`, as [key, counter, slot, units] (a compacted
        journal's records)."""
        rows = []
        for (key_id, counter), slots in self._granted.items():
            period_s = self._periods.get((key_id, counter))
            first = -math.inf if period_s is None else int(now // (period_s / SLOTS)) - SLOTS
            rows += [[key_id, counter, slot, n] for slot, n in slots.items() if n and slot >= first]
        return rows

    def forget(self, key_id: str) -> None:
        """Drops every count of a key (one that can no longer be used)."""
        for slot in [s for s in self._granted if s[0] == key_id]:
            del self._granted[slot]
            self._periods.pop(slot, None)
