"""How a queen takes tasks in: admission (a payload that fits, a task id accepted once, a hand-over
when no agent here can run it, backpressure), and the queue that hands tasks to free agents."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from actors._private.agents.payload import check_payload
from actors._private.queen.supervisor import FAILED
from actors._private.task import Task, TaskStatus, now
from models._private.core import tracing
from models._private.core.errors import (
    BackpressureError,
    DelegationError,
    SchedulingError,
    UnknownCapabilityError,
)
from models._private.core.names import capability_offered

if TYPE_CHECKING:
    from actors._private.pool import AgentSlot
    from actors._private.queen.task_book import TaskRecord

__all__ = ["Admission"]


class Admission:
    """`SwarmQueen`'s admission and queue (a part of the queen, not an actor of its own)."""

    async def _admit_all(self, tasks: list[Task | dict]) -> list[TaskRecord | Exception]:
        """Admits several tasks: each one's record, or the error that refused it, in order.

        Tasks this swarm runs are admitted one after the other at once; those for other swarms
        are admitted concurrently, so that the delegator hands them over together (one call
        per target swarm) rather than one round trip after the other.
        """
        out: list[TaskRecord | Exception | asyncio.Future] = []
        handing_over = False
        for t in tasks:
            cap = t.capability if isinstance(t, Task) else t.get("capability") if isinstance(t, dict) else ""
            here = isinstance(cap, str) and self.supervisor.state != FAILED and self._offered(cap) is not None
            if here:
                try:
                    out.append(await self._admit(t))
                except Exception as e:
                    out.append(e)
            else:
                out.append(asyncio.ensure_future(self._admit(t)))
                handing_over = True
        if handing_over:
            await asyncio.gather(*(a for a in out if isinstance(a, asyncio.Future)), return_exceptions=True)
        return [(a.exception() or a.result()) if isinstance(a, asyncio.Future) else a for a in out]

    async def _admit(self, task: Task | dict) -> TaskRecord:
        """Accepts a task in memory and queues the journal records that make it durable (the
        caller flushes them, or lets them ride with a later write)."""
        self._ensure_started()
        # A copy: the queen fills in fields, and one object may stand for several tasks in a batch.
        task = task.model_copy() if isinstance(task, Task) else Task.model_validate(task)
        if not task.id:
            return await self._admit_new(task)
        if not task.id.startswith(f"{self.name}:"):
            raise ValueError(f"task id {task.id!r} must start with '{self.name}:'")
        # A retried submit is accepted once, also while the first is still being admitted
        # (a hand-over awaits another queen): the second waits for the first's outcome.
        while (admitting := self._admitting.get(task.id)) is not None:
            await admitting.wait()
        if task.id in self.book.records:
            return self.book.records[task.id]
        self._admitting[task.id] = admitting = asyncio.Event()
        try:
            return await self._admit_new(task)
        finally:
            del self._admitting[task.id]
            admitting.set()

    async def _admit_new(self, task: Task) -> TaskRecord:
        # The task's trace goes on under this queen's accept: its attempts, a hand-over and
        # (journaled) its retries after a restart nest there.
        if not tracing.enabled():
            return await self._queue_or_hand_over(task)
        attributes = {"swarmray.swarm": self.name, "swarmray.capability": task.capability}
        with tracing.span("queen.accept", task.trace or {}, "consumer", attributes=attributes) as span:
            task.trace = tracing.carrier()
            rec = await self._queue_or_hand_over(task)
            span.set_attribute("swarmray.task_id", rec.task.id)
            return rec

    async def _queue_or_hand_over(self, task: Task) -> TaskRecord:
        task.submitted_at = task.submitted_at or now()
        task.steps = []  # what an attempt finished only this queen's journal says, never a caller
        key = self._offered(task.capability)
        local = key is not None
        # A payload that cannot work is refused now, not failed after retries; a family's
        # members have no declared model here (its agent checks them).
        if key == task.capability:
            check_payload(self.payloads.get(task.capability), task.capability, task.payload)
        target = None
        failed = self.supervisor.state == FAILED
        if local and (failed or (never := self._unrunnable(key))):
            try:  # no agent here (for now, or ever): another swarm that offers it takes it
                target = await self.delegator.hand_over(task)
            except (UnknownCapabilityError, DelegationError):
                if not failed:  # refused now rather than queued for ever
                    raise SchedulingError(f"no agent can run {task.capability!r}: {never}") from None
                # the swarm's agents come back after escalation: keep it here until then
        elif not local:
            target = await self.delegator.hand_over(task)
        if target is None:
            limit = self.config.queen.max_queued_tasks
            if len(self.queue) >= limit:
                raise BackpressureError(self.name, len(self.queue), limit)
            rec = self.book.admit(task)
            self._enqueue(rec)
            return rec
        rec = self.book.admit(task, delegated_to=target)
        rec.attempt = self._spawn(self._follow(rec))
        return rec

    def _offered(self, capability: str) -> str | None:
        """The capability this swarm offers that covers `capability` (itself, or a family):
        the key its tasks are queued, dispatched and timed under; None if not offered here."""
        if capability in self.local_caps:
            return capability
        return capability_offered(self.local_families, capability) if self.local_families else None

    def _unrunnable(self, cap: str) -> str:
        """Why no agent of this swarm can ever run `cap` ("" if one may): each pool offering it
        gave up starting, or asks for resources the cluster cannot offer."""
        reasons = [(p.config.name, p.unrunnable()) for p in self.pools.values() if cap in p.capabilities]
        if not reasons or not all(why for _, why in reasons):
            return ""
        return "; ".join(f"pool {name!r}: {why}" for name, why in reasons)

    def _enqueue(self, rec: TaskRecord) -> None:
        rec.result.status = TaskStatus.QUEUED
        if tracing.enabled():  # the start of its `task.queue_wait` span
            rec.queued_ns = time.time_ns()
        key = self._offered(rec.task.capability) or rec.task.capability
        self.queue.push(rec.task.id, key, rec.task.priority)
        self._pump(key)

    def _pump(self, cap: str) -> None:
        while self.dispatcher.has_free(cap) and (task_id := self.queue.pop(cap)) is not None:
            rec = self.book.records.get(task_id)
            if rec is None or rec.result.status is not TaskStatus.QUEUED:
                continue  # cannot happen while every status change off QUEUED leaves the queue
            agent = self.dispatcher.acquire(cap)
            rec.attempt = self._spawn(self._run_attempt(rec, agent))

    def _agents_ready(self, agents: list[AgentSlot]) -> None:
        self.dispatcher.add(agents)
        for cap in {c for a in agents for c in a.capabilities}:
            self._pump(cap)
