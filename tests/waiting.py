"""The one way tests wait: poll a condition until it holds or a deadline passes, never a
fixed sleep that hopes something has happened by then."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["async_wait_until", "wait_until"]

T = TypeVar("T")
POLL_S = 0.02


def _failed(what: str, timeout_s: float, last: Any) -> AssertionError:
    return AssertionError(f"waited {timeout_s} s for {what}; last seen: {last!r}")


def wait_until(condition: Callable[[], T], timeout_s: float = 30.0, what: str = "the condition") -> T:
    """Returns `condition()`'s first truthy value; fails the test after `timeout_s`.

    An exception from `condition` counts as not yet (the thing polled may be restarting).
    """
    deadline, last = time.monotonic() + timeout_s, None
    while True:
        try:
            last = condition()
            if last:
                return last
        except Exception as e:  # the polled thing may be briefly unreachable (restarting)
            last = e
        if time.monotonic() > deadline:
            raise _failed(what, timeout_s, last)
        time.sleep(POLL_S)


async def async_wait_until(
    condition: Callable[[], T], timeout_s: float = 30.0, what: str = "the condition"
) -> T:
    """`wait_until` for a test running on an event loop: polls without blocking it. The
    condition may be a coroutine function (each poll awaits it)."""
    deadline, last = time.monotonic() + timeout_s, None
    while True:
        last = condition()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise _failed(what, timeout_s, last)
        await asyncio.sleep(POLL_S)
