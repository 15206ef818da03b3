"""OTP restart strategies and restart intensity, on top of Ray actors.

Ray restarts one actor at a time (`max_restarts`) and counts restarts over the actor's whole
life. OTP supervisors restart groups of children and count restarts within a sliding window,
escalating when there are too many. This module keeps that policy; the queen applies it to the
agent hosts of its swarm.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from actors._private.config import SupervisionConfig

__all__ = ["FAILED", "RUNNING", "Supervisor"]

RUNNING, FAILED = "running", "failed"

H = TypeVar("H")


class Supervisor:
    """Decides which children restart after a failure, and when to give up."""

    def __init__(self, config: SupervisionConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.clock = clock
        self.restarts: deque[float] = deque()
        self.total_restarts = 0
        self.state = RUNNING
        self.reason = ""
        self.failed_at: float | None = None

    def _trim(self, now: float) -> None:
        while self.restarts and self.restarts[0] <= now - self.config.period_s:
            self.restarts.popleft()

    def allow_restart(self) -> bool:
        """Records one restart; False when that exceeds the intensity (the caller escalates)."""
        now = self.clock()
        self._trim(now)
        self.restarts.append(now)
        self.total_restarts += 1
        return len(self.restarts) <= self.config.max_restarts

    def victims(self, failed: H, started_order: Sequence[H]) -> list[H]:
        """Children to restart for `failed`, given all children in the order they started."""
        strategy = self.config.strategy
        if strategy == "one_for_all":
            return list(started_order)
        if strategy == "rest_for_one" and failed in started_order:
            return list(started_order[started_order.index(failed) :])
        return [failed]

    def escalate(self, reason: str) -> str:
        """Marks the supervisor failed; returns the reason as status shows it."""
        c = self.config
        self.state, self.failed_at = FAILED, self.clock()
        self.reason = (
            f"restart intensity exceeded: {len(self.restarts)} restarts within "
            f"{c.period_s:g} s (max_restarts {c.max_restarts}); last failure: {reason}"
        )
        return self.reason

    def recover(self) -> None:
        """Back to running with an empty window (after `recover_after_s` or `swarm up`)."""
        self.state, self.reason, self.failed_at = RUNNING, "", None
        self.restarts.clear()

    def describe(self) -> dict[str, Any]:
        """Strategy, intensity window and state, for `swarm status`."""
        self._trim(self.clock())
        c = self.config
        return {
            "strategy": c.strategy,
            "max_restarts": c.max_restarts,
            "period_s": c.period_s,
            "restarts_in_window": len(self.restarts),
            "total_restarts": self.total_restarts,
            "state": self.state,
            "reason": self.reason,
        }
