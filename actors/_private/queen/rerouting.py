"""How a queen's tasks leave for other swarms after admission: queued tasks handed over when this
swarm fails or can never run them (one path for both), and delegated tasks followed there."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from actors._private.task import TaskStatus
from models._private.core.errors import DelegationLost

if TYPE_CHECKING:
    from actors._private.queen.task_book import TaskRecord

__all__ = ["Rerouting"]


class Rerouting:
    """`SwarmQueen`'s rerouting and following (a part of the queen, not an actor of its own)."""

    async def _reroute(self, rec: TaskRecord) -> None:
        """Sends a queued task of a failed swarm to another swarm offering its capability; if
        nobody else offers it, it waits here for the agents to come back."""
        if not self.queue.remove(rec.task.id):
            return  # no longer waiting here: cancelled, or taken by an agent
        await self._hand_over_queued(rec, unplaced=self._enqueue)

    async def _give_up_queued(self, cap: str, reason: str) -> None:
        """Queued tasks of a capability no agent here can ever run go to another swarm that
        offers it, or fail with the reason, instead of waiting for ever."""

        def fail(rec: TaskRecord) -> None:
            error = f"no agent can run {cap!r}: {reason}"
            self.book.finish(rec, TaskStatus.FAILED, error=error, error_type="SchedulingError")

        while (task_id := self.queue.pop(cap)) is not None:
            rec = self.book.records.get(task_id)
            if rec is None or rec.result.status is not TaskStatus.QUEUED:
                continue
            await self._hand_over_queued(rec, unplaced=fail)

    async def _hand_over_queued(self, rec: TaskRecord, unplaced: Callable[[TaskRecord], None]) -> None:
        """Hands a task just taken off the queue to another swarm and follows it there;
        `unplaced(rec)` when no other swarm takes it. A task cancelled meanwhile stays cancelled
        (and is cancelled where it went)."""
        # Out of the queue while it is handed over, so that nothing else takes or moves it.
        rec.result.status = TaskStatus.DELEGATED
        target = await self.delegator.reroute(rec.task)
        if rec.final is not None:  # cancelled meanwhile
            if target is not None:
                await self.delegator.cancel(target)
            return
        if target is None:
            unplaced(rec)
            return
        self.book.delegate(rec, target)
        rec.attempt = self._spawn(self._follow(rec))

    async def _follow(self, rec: TaskRecord) -> None:
        """Waits for a delegated task's result where it runs, and finishes the task with it."""
        try:
            remote = await self.delegator.follow(rec, self.book.move)
        except DelegationLost as e:
            self.book.finish(rec, TaskStatus.FAILED, error=str(e), error_type=e.error_type)
            return
        except Exception as e:  # e.g. the journal refused the move: the task still ends
            error = f"following the task at {rec.delegated_to[0]!r} failed: {type(e).__name__}: {e}"
            self.book.finish(rec, TaskStatus.FAILED, error=error, error_type=type(e).__name__)
            return
        res = rec.result
        res.agent_id, res.swarm, res.attempts = remote.agent_id, remote.swarm, remote.attempts
        res.timings.started_at = remote.timings.started_at
        self._spent(res, remote.usage)  # counted there
        self.book.finish(
            rec, remote.status, output=remote.output, error=remote.error, error_type=remote.error_type
        )
