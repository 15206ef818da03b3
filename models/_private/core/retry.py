"""Calls into Ray that fail: what was really raised, which failures pass, and how long to wait.

Every layer meets the same three questions when it calls an actor or a replica, so they are
answered once here: `unwrap_error` takes the exception out of Ray's wrapper, `TRANSIENT` names
the failures that end when Ray has restarted the callee, `retrying` is the one tenacity policy
for riding them out, and `backoff_s` the one delay for retries a caller schedules itself.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import tenacity
from ray.exceptions import ActorUnavailableError, RayActorError

__all__ = ["TRANSIENT", "backoff_s", "retrying", "unwrap_error"]

TRANSIENT = (RayActorError, ActorUnavailableError)
"""The callee's process is gone or restarting (or its node left): the same call may succeed later."""


def unwrap_error(err: BaseException) -> BaseException:
    """The exception the callee raised, out of Ray's `RayTaskError` around it (else `err`)."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Delay before retry number `attempt` (1, 2, ...): `base_s · 2^(attempt-1)`, capped at
    `max_s`, then scaled by a random factor in [0.5, 1] so that retries of many callers spread."""
    return min(max_s, base_s * 2 ** max(0, attempt - 1)) * random.uniform(0.5, 1.0)


def retrying(retry_s: float, on_retry: Callable[[], None] | None = None, asynchronous: bool = False) -> Any:
    """A tenacity `Retrying` (or `AsyncRetrying`) that repeats a call while it raises a
    `TRANSIENT` error, with exponential backoff from 50 ms to 2 s, for up to `retry_s` seconds,
    then re-raises the last error. Only for calls that are safe to repeat."""
    kwargs: dict[str, Any] = {
        "retry": tenacity.retry_if_exception_type(TRANSIENT),
        "wait": tenacity.wait_exponential(multiplier=0.05, max=2.0),
        "stop": tenacity.stop_after_delay(retry_s),
        "before_sleep": (lambda _: on_retry()) if on_retry else None,
        "reraise": True,
    }
    return tenacity.AsyncRetrying(**kwargs) if asynchronous else tenacity.Retrying(**kwargs)
