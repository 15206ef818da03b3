"""What a served model takes in: how many requests may wait for its engine, the deadline that
starts when the engine admits one, and the retry hint a refused request gets.

A request to a model first waits in its engine's queue, behind the rows the batch decodes, and
then runs in the batch. Waiting is not failing: a healthy engine that is busy answers every
request it took, later. So `ModelConfig.timeout_s` counts from admission (the engine calls
`admitted`), where it bounds a stalled engine, and the wait itself is bounded in number, not in
time: with `max_queued_requests` requests waiting beyond the batch's free rows, one more is
refused at once (`ModelOverloadedError`, a 503 with Retry-After), and none already taken is
dropped. The gateway adds one watch of its own (`AnswerPace.watched`): a request that waits
while the model answers no one for `timeout_s` fails (a deployment whose replica is gone holds
requests in Serve's router; an engine may stall before it admits), and falls back.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from models._private.core.errors import EngineTimeoutError, ModelOverloadedError

__all__ = ["RETRY_AFTER_MAX_S", "RETRY_AFTER_MIN_S", "Admission", "AnswerPace", "Ticket", "queued_of"]

T = TypeVar("T")
RETRY_AFTER_MIN_S = 1.0  # Retry-After is whole seconds; and what a refusal says with no pace known
RETRY_AFTER_MAX_S = 60.0  # the longest the openai client honours (it retries sooner beyond it)
_PACE_WINDOW = 64  # answers the pace is measured over


class Ticket:
    """One request's passage through a model: waiting, then admitted into the engine's batch."""

    def __init__(self, admission: Admission):
        self._admission = admission
        self._admitted = asyncio.Event()
        self.admitted_at: float | None = None  # the loop's time of admission
        self._left = False

    def admit(self) -> None:
        """The engine took the request into its batch (its `admitted` callback)."""
        if self.admitted_at is None and not self._left:
            self.admitted_at = asyncio.get_running_loop().time()
            self._admission.waiting -= 1
            self._admission.running += 1
            self._admitted.set()

    def leave(self) -> None:
        """The request ended (answered, failed or cancelled), admitted or not."""
        if self._left:
            return
        self._left = True
        if self.admitted_at is None:
            self._admission.waiting -= 1
        else:
            self._admission.running -= 1
        self._admission.ended()

    async def within(
        self, work: Awaitable[T], timeout_s: float, since: float | None = None, what: str = "answer"
    ) -> T:
        """`work`'s result, waited for as long as the request is not admitted, then until
        `timeout_s` after admission (or after `since`, a loop time, when later).

        Raises:
            EngineTimeoutError: the engine admitted the request and `work` did not end in time;
                `work` is cancelled (its row leaves the batch).
        """
        task = asyncio.ensure_future(work)
        try:
            if self.admitted_at is None:
                admitted = asyncio.ensure_future(self._admitted.wait())
                try:
                    await asyncio.wait({task, admitted}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    admitted.cancel()
            if not task.done():
                assert self.admitted_at is not None
                start = max(self.admitted_at, since or self.admitted_at)
                left = start + timeout_s - asyncio.get_running_loop().time()
                done, _ = await asyncio.wait({task}, timeout=max(left, 0.0))
                if not done:
                    took = f"took the request into its batch and sent no {what}"
                    raise EngineTimeoutError(self._admission.model, timeout_s, took)
            return task.result()
        finally:
            if not task.done():
                task.cancel()

    async def stream(self, pieces: AsyncIterator[T], timeout_s: float) -> AsyncIterator[T]:
        """`pieces`, the first one due `timeout_s` after admission and each later one
        `timeout_s` after the one before (a stream stalled midway breaks, in-band)."""
        iterator = aiter(pieces)
        since: float | None = None
        while True:
            try:
                what = "first piece" if since is None else "next piece"
                piece = await self.within(anext(iterator), timeout_s, since, what)
            except StopAsyncIteration:
                return
            since = asyncio.get_running_loop().time()
            yield piece


class Admission:
    """A model server's requests between arrival and answer: how many wait for the engine and
    how many it runs, the bound on the waiting, and the counts `ModelServer.counters` reports
    (requests ended, refused, and the time with one or more taken).

    Args:
        model: The model's name (for errors).
        max_queued: Requests that may wait beyond the batch's free rows; None: no bound.
        batch_rows: Rows the engine decodes at once (its `max_batch_size`), or None when it
            batches on its own (vLLM: it admits at once).
    """

    def __init__(self, model: str, max_queued: int | None, batch_rows: int | None):
        self.model = model
        self.max_queued = max_queued
        self.batch_rows = batch_rows
        self.waiting = 0  # arrived, not admitted yet
        self.running = 0  # admitted, not answered yet
        self.refused = 0  # refused for a full queue, since start
        self.answered = 0  # taken and ended (answered, failed or cancelled), since start
        # Time with one request or more taken: against the wall time, how idle the engine sat.
        self._busy_s, self._busy_since = 0.0, 0.0

    def enter(self) -> Ticket:
        """A ticket for a request that arrives now.

        Raises:
            ModelOverloadedError: `max_queued` requests already wait beyond the free rows.
        """
        if self.max_queued is not None:
            free = max(0, (self.batch_rows or 0) - self.running)
            queued = self.waiting - free  # those that will still wait once the free rows fill
            if queued >= self.max_queued:
                self.refused += 1
                raise ModelOverloadedError(self.model, queued, self.max_queued)
        if not self.waiting + self.running:
            self._busy_since = time.monotonic()
        self.waiting += 1
        return Ticket(self)

    def ended(self) -> None:
        """A ticket's request ended (`Ticket.leave`)."""
        self.answered += 1
        if not self.waiting + self.running:
            self._busy_s += time.monotonic() - self._busy_since

    def busy_s(self) -> float:
        """Seconds with one request or more taken, up to now."""
        taken = self.waiting + self.running
        return self._busy_s + (time.monotonic() - self._busy_since if taken else 0.0)


class AnswerPace:
    """How fast a model backend answers, as the gateway sees it: the hint a refused request
    gets for when to come back, and when it last showed progress (an answer, or a piece of a
    stream), which tells a busy backend from a dead or stalled one (`watched`)."""

    def __init__(self) -> None:
        self._times: collections.deque[float] = collections.deque(maxlen=_PACE_WINDOW)
        self.last: float | None = None  # the last progress, a monotonic time

    def answered(self, at: float) -> None:
        """An answer came at `at` (a monotonic time)."""
        self._times.append(at)
        self.last = at

    def progressed(self, at: float) -> None:
        """A piece of a stream came at `at`."""
        self.last = at

    async def watched(self, name: str, work: Awaitable[T], timeout_s: float) -> T:
        """`work`'s result, unless the backend showed no progress, to this request or any
        other, for `timeout_s` while it waited: a dead deployment (Serve's router holds the
        request until a replica comes back) or a stalled engine. A busy one answers others.

        Raises:
            EngineTimeoutError: no progress for `timeout_s`; `work` is cancelled.
        """
        task = asyncio.ensure_future(work)
        start = time.monotonic()
        try:
            while True:
                left = max(start, self.last or start) + timeout_s - time.monotonic()
                if left <= 0:
                    raise EngineTimeoutError(name, timeout_s, "answered no request while this one waited")
                done, _ = await asyncio.wait({task}, timeout=left)
                if done:
                    return task.result()
        finally:
            if not task.done():
                task.cancel()

    def per_s(self) -> float | None:
        """Answers a second over the last ones, or None before two."""
        if len(self._times) < 2 or self._times[-1] <= self._times[0]:
            return None
        return (len(self._times) - 1) / (self._times[-1] - self._times[0])

    def retry_after_s(self, queued: int) -> float:
        """When a refused request should come back: once about half of the `queued` requests
        ahead of it are answered at the recent pace (the other half keep the engine busy while
        it returns), in whole seconds within [RETRY_AFTER_MIN_S, RETRY_AFTER_MAX_S]."""
        rate = self.per_s()
        if rate is None:
            return RETRY_AFTER_MIN_S
        return float(min(RETRY_AFTER_MAX_S, max(RETRY_AFTER_MIN_S, math.ceil(queued / 2 / rate))))


def queued_of(error: Any) -> tuple[int, int] | None:
    """(queued, max_queued) of Serve's `BackPressureError` (a model deployment's handle queue
    is full), else None."""
    from ray.serve.exceptions import BackPressureError

    if not isinstance(error, BackPressureError):
        return None
    queued, max_queued = error.args[:2]
    return int(queued), int(max_queued)
