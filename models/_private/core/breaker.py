"""A circuit breaker: closed, open for a cool-down, then half-open with one probe."""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import Field, PositiveFloat, PositiveInt

from models._private.core.config import ConfigModel

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker", "CircuitBreakerConfig"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreakerConfig(ConfigModel):
    """A breaker per remote backend: closed, open for a cool-down, then half-open with a probe."""

    failure_threshold: PositiveInt = Field(3, description="Consecutive failures that open the breaker.")
    cooldown_s: PositiveFloat = Field(
        10.0, description="Seconds an open breaker skips the backend before one probe is let through."
    )


class CircuitBreaker:
    """Guards calls to one backend.

    Closed, calls go through and consecutive failures are counted; at `failure_threshold` the
    breaker opens and `allow()` refuses for `cooldown_s`. Then it is half-open: `allow()`
    admits a single probe; its success closes the breaker, its failure opens it again. A call
    that ends with no verdict (cancelled, or refused for a reason that is not the backend's
    health) must `abandon()`, or a half-open breaker would wait for its probe for ever.
    """

    def __init__(self, config: CircuitBreakerConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False

    @property
    def state(self) -> str:
        """closed, open or half_open."""
        if self.opened_at is None:
            return CLOSED
        if self.clock() - self.opened_at < self.config.cooldown_s:
            return OPEN
        return HALF_OPEN

    def allow(self) -> bool:
        """Whether a call may go through now (a half-open breaker lets one probe through)."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def success(self, since: float | None = None) -> None:
        """A call went well: the breaker closes.

        Args:
            since: When the call began, on the breaker's clock. A call begun before the breaker
                last opened says nothing about the backend now, so its success is ignored.
        """
        if since is not None and self.opened_at is not None and since < self.opened_at:
            return
        self.failures, self.opened_at, self.probing = 0, None, False

    def abandon(self) -> None:
        """A call ended with no verdict (e.g. cancelled): a half-open breaker may probe again."""
        self.probing = False

    def failure(self) -> None:
        """A call failed: count it, and open (again) at the threshold or after a failed probe."""
        self.failures += 1
        if self.probing or self.failures >= self.config.failure_threshold:
            self.opened_at, self.probing = self.clock(), False
