"""Exact per-key limits across gateway replicas: one ledger decides, replicas spend leases.

A key's limits are counters over fixed windows: `requests` (rpm, 60 s), `tokens` (tpm, 60 s),
`budget` (budget_tokens, budget_period_s) and `cost` (budget_usd, budget_period_s, counted in
micro-dollars so that every counter is whole units). The `Ledger` (held by the key authority) is the
one place that grants units of a window; a unit granted is spent or given back, never granted
twice, so the sum spent over all replicas never exceeds the limit.

So that the common request asks nobody, a replica asks for more than it needs (a lease of
`lease_share` of the limit) and spends the rest locally. Leases would let one replica hold
units another needs; so once a window is tight (less than `tight_share` of the limit left),
the ledger grants only what is asked, and tells the replica, which gives its unspent lease back:
from then on every request of that key asks the ledger, and exactly the limit is admitted
whatever replicas the requests land on. A replica asks for one lease of a key at a time (its
other requests wait and spend it), so it never holds more than one lease's surplus: a replica
that goes idle holding one, while the window goes tight, leaves at most that much unadmitted
(never more admitted). tests/unit/test_spender.py runs 250 requests over two replicas in
random interleavings against a limit of 100: exactly 100 pass each time. A window's units
expire with it (fixed windows: a burst at a window's end and the next one's start can reach
twice the per-minute rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["COUNTERS", "PERSISTED", "Grant", "Ledger", "limit_of", "period_of", "window_of"]

# counter -> (the KeyRecord field of its limit, its window in seconds or the field of it)
COUNTERS: dict[str, tuple[str, float | str]] = {
    "requests": ("rpm", 60.0),
    "tokens": ("tpm", 60.0),
    "budget": ("budget_tokens", "budget_period_s"),
    "cost": ("budget_usd", "budget_period_s"),
}
# Counters whose windows are long enough to outlive a restart of the ledger's holder.
PERSISTED = frozenset({"budget", "cost"})
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
    return int(now // period_s)


@dataclass
class Grant:
    """What the ledger granted: `units` (0: refused), the window they belong to, whether the
    window is tight (give leases back, ask exactly), and when it ends."""

    units: int
    window: int
    tight: bool
    retry_after_s: float


class Ledger:
    """Units granted per (key, counter, window).

    Args:
        lease_share: A lease's size, as a share of the limit (at least what is asked).
        tight_share: Below this share of the limit left, grant only what is asked.
    """

    def __init__(self, lease_share: float = 0.05, tight_share: float = 0.2):
        self.lease_share, self.tight_share = lease_share, tight_share
        self._granted: dict[tuple[str, str, int], int] = {}

    def acquire(
        self, key_id: str, counter: str, limit: int, period_s: float, n: int, now: float, force: bool = False
    ) -> Grant:
        """Grants `n` units or more (a lease), or none when fewer are left: then `retry_after_s`
        says when the window ends, or is infinite when `n` exceeds the whole limit. `force`
        grants exactly `n` whatever is left: usage found after the fact, beyond a reservation."""
        window = window_of(now, period_s)
        retry = (window + 1) * period_s - now
        slot = (key_id, counter, window)
        granted = self._granted.get(slot, 0)
        left = limit - granted
        if force:
            self._granted[slot] = granted + n
            return Grant(n, window, True, retry)
        if n > left:
            return Grant(0, window, True, math.inf if n > limit else retry)
        tight = left - n < self.tight_share * limit
        units = n if tight else min(left, max(n, math.ceil(self.lease_share * limit)))
        self._granted[slot] = granted + units
        self._forget(window, counter, key_id)
        return Grant(units, window, tight or left - units < self.tight_share * limit, retry)

    def release(self, key_id: str, counter: str, window: int, n: int) -> None:
        """Units granted in `window` and not spent; ignored once the window has passed."""
        slot = (key_id, counter, window)
        if slot in self._granted:
            self._granted[slot] = max(0, self._granted[slot] - n)

    def restore(self, key_id: str, counter: str, window: int, used: int) -> None:
        """Units granted in `window` before a restart (a budget's journal)."""
        self._granted[(key_id, counter, window)] = used

    def used(self, key_id: str, counter: str, window: int) -> int:
        return self._granted.get((key_id, counter, window), 0)

    def _forget(self, window: int, counter: str, key_id: str) -> None:
        # Older windows of this key and counter can no longer be granted from.
        for slot in [s for s in self._granted if s[:2] == (key_id, counter) and s[2] < window]:
            del self._granted[slot]
