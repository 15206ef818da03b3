"""SwarmQueen: takes a swarm's tasks, queues them by priority and runs them on its agents."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import time
import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from actors._private import names
from actors._private.dispatch import Dispatcher
from actors._private.pool import AgentPool, AgentSlot
from actors._private.task import Task, TaskResult, TaskStatus, Timings, now
from cluster._private.config import RegistryConfig, SwarmConfig
from cluster._private.errors import (
    BackpressureError,
    DelegationError,
    TaskNotFoundError,
)

__all__ = ["SwarmQueen"]

log = logging.getLogger(__name__)

TICK_S = 0.5


@dataclass(eq=False)
class _Record:
    task: Task
    result: TaskResult
    done: asyncio.Event = field(default_factory=asyncio.Event)
    attempt: asyncio.Task | None = None  # the running attempt, or the delegation
    timer: asyncio.TimerHandle | None = None  # a pending retry
    delegated_to: tuple[str, str] | None = None  # (swarm, task id there)


class SwarmQueen:
    """The coordinator of one swarm; a named, detached Ray actor `queen:<swarm>`.

    Every accepted task gets a record. A task whose capability the swarm offers waits in a
    per-capability priority queue until the dispatcher hands it the least-loaded agent; one
    the swarm lacks is routed by the registry to another swarm's queen, which accepts it
    before `submit` returns here. Either way the caller asks this queen for the result.
    """

    def __init__(self, namespace: str, swarm: SwarmConfig, registry: RegistryConfig):
        self.namespace = namespace
        self.name = swarm.name
        self.config = swarm
        self.registry_config = registry
        self.local_caps = set(swarm.capabilities)
        self.cap_timeouts_s = swarm.capability_timeouts_s()
        self.records: dict[str, _Record] = {}
        self.finished: OrderedDict[str, None] = OrderedDict()  # final ids, oldest first
        self.queues: dict[str, list[tuple[int, int, str]]] = {}
        self.queued = 0
        self.queued_by_cap: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.dispatcher = Dispatcher()
        self.pools: dict[str, AgentPool] = {}
        self._seq = itertools.count()
        self._started = False
        self._tick: asyncio.Task | None = None
        self._handles: dict[str, Any] = {}

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Creates the agent pools and registers with the registry; safe to call again."""
        self._ensure_started()
        await self._actor(names.REGISTRY).register.remote(self.registration())
        return self.status()

    def _ensure_started(self) -> None:
        # Also runs after Ray restarts this actor, so a restarted queen rebuilds its pools.
        if self._started:
            return
        self._started = True
        for pool_cfg in self.config.pools.values():
            pool = AgentPool(self.name, pool_cfg, self._agents_ready, self._agents_lost)
            self.pools[pool_cfg.name] = pool
            pool.start()
        self._tick = asyncio.get_running_loop().create_task(self._tick_loop())

    async def stop(self) -> None:
        """Kills the agent pools (the actor itself is killed by `swarm down`)."""
        for pool in self.pools.values():
            pool.stop()

    def registration(self) -> dict[str, Any]:
        """What the registry needs to route to this swarm."""
        return {
            "name": self.name,
            "capabilities": sorted(self.local_caps),
            "priority": self.config.priority,
            "description": self.config.description,
        }

    # -- public API -----------------------------------------------------------------------

    async def submit(self, task: Task | dict) -> str:
        """Accepts a task and returns its id at once.

        Raises:
            BackpressureError: the queue holds `max_queued_tasks` tasks.
            UnknownCapabilityError: no swarm offers the task's capability.
            DelegationError: the hop limit is reached or every offering swarm was visited.
        """
        self._ensure_started()
        task = task if isinstance(task, Task) else Task.model_validate(task)
        task.submitted_at = task.submitted_at or now()
        if task.capability in self.local_caps:
            limit = self.config.queen.max_queued_tasks
            if self.queued >= limit:
                raise BackpressureError(self.name, self.queued, limit)
            rec = self._accept(task, TaskStatus.QUEUED)
            self._enqueue(rec)
        else:
            target, remote_id = await self._hand_over(task)
            rec = self._accept(task, TaskStatus.DELEGATED)
            rec.delegated_to = (target, remote_id)
            rec.attempt = self._spawn(self._follow(rec))
        return rec.task.id

    async def submit_many(self, tasks: list[Task | dict]) -> list[str]:
        """Accepts several tasks in one call; stops at the first that is refused."""
        return [await self.submit(t) for t in tasks]

    async def result(self, task_id: str, timeout_s: float | None = None) -> TaskResult:
        """Waits up to `timeout_s` (None: no limit) for the task to end, then reports it.

        A task still running at the deadline comes back with a non-final status.
        """
        rec = self._record(task_id)
        if not rec.done.is_set():
            try:
                await asyncio.wait_for(rec.done.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass
        return rec.result

    async def run(self, task: Task | dict, timeout_s: float | None = None) -> TaskResult:
        """Submits a task and waits for its result in one call."""
        return await self.result(await self.submit(task), timeout_s)

    async def run_many(self, tasks: list[Task | dict], timeout_s: float | None = None) -> list[TaskResult]:
        """Submits several tasks and waits for all their results in one call."""
        ids = [await self.submit(t) for t in tasks]
        return [await self.result(i, timeout_s) for i in ids]

    async def cancel(self, task_id: str) -> bool:
        """Cancels a task that has not ended; returns whether it was cancelled."""
        rec = self._record(task_id)
        if rec.result.status.final:
            return False
        if rec.delegated_to is not None:
            swarm, remote_id = rec.delegated_to
            await self._actor(names.queen(swarm)).cancel.remote(remote_id)
        if rec.timer is not None:
            rec.timer.cancel()
        if rec.result.status is TaskStatus.QUEUED:
            self._dequeued(rec.task.capability)  # its heap entry is skipped when popped
        if rec.attempt is not None:
            rec.attempt.cancel()
        self._finish(rec, TaskStatus.CANCELLED, error="cancelled by request", error_type="TaskCancelledError")
        return True

    def status(self) -> dict[str, Any]:
        """Queue depths, task counts and every agent's state."""
        agents = [row for pool in self.pools.values() for row in pool.describe()]
        return {
            "swarm": self.name,
            "capabilities": sorted(self.local_caps),
            "queued": self.queued,
            "queue_depth": {c: n for c, n in sorted(self.queued_by_cap.items()) if n},
            "running": sum(a["inflight"] for a in agents),
            "delegated_out": sum(1 for r in self.records.values() if r.result.status is TaskStatus.DELEGATED),
            "tasks": {
                s: self.counts[s]
                for s in ("accepted", "succeeded", "failed", "timed_out", "cancelled", "retried", "delegated")
            },
            "agents": agents,
        }

    def load(self) -> dict[str, Any]:
        """Numbers the registry balances on."""
        slots = sum(
            a.max_concurrent for p in self.pools.values() for a in p.agents if a.host.state == "alive"
        )
        running = sum(a.inflight for p in self.pools.values() for a in p.agents)
        return {"queued": self.queued, "running": running, "slots": slots}

    # -- supervision hooks (called by the health monitor) -----------------------------------

    def hosts(self) -> list[tuple[str, Any, str]]:
        """(host id, actor handle, state) of every host in its own actor, for the monitor to ping.

        Co-located hosts are left out: they live exactly as long as this queen.
        """
        self._ensure_started()
        return [
            (h.id, h.handle, h.state) for p in self.pools.values() for h in p.hosts.values() if not h.local
        ]

    def replace_hosts(self, host_ids: list[str], reason: str) -> int:
        """Replaces hosts the monitor found dead or stuck; returns how many."""
        replaced = 0
        for pool in self.pools.values():
            for host_id in host_ids:
                if (host := pool.hosts.get(host_id)) is not None:
                    pool.host_lost(host, reason)
                    replaced += 1
        return replaced

    # -- internals ------------------------------------------------------------------------

    def _actor(self, name: str) -> Any:
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = ray.get_actor(name, namespace=self.namespace)
        return handle

    def _spawn(self, coro: Any) -> asyncio.Task:
        return asyncio.get_running_loop().create_task(coro)

    def _record(self, task_id: str) -> _Record:
        rec = self.records.get(task_id)
        if rec is None:
            raise TaskNotFoundError(task_id, self.name)
        return rec

    def _accept(self, task: Task, status: TaskStatus) -> _Record:
        task.id = f"{self.name}:{uuid.uuid4().hex[:16]}"
        task.origin_swarm = task.origin_swarm or self.name
        rec = _Record(
            task,
            TaskResult(
                task_id=task.id,
                capability=task.capability,
                status=status,
                timings=Timings(submitted_at=task.submitted_at),
            ),
        )
        self.records[task.id] = rec
        self.counts["accepted"] += 1
        return rec

    def _is_queued(self, task_id: str) -> bool:
        rec = self.records.get(task_id)
        return rec is not None and rec.result.status is TaskStatus.QUEUED

    def _enqueue(self, rec: _Record) -> None:
        rec.result.status = TaskStatus.QUEUED
        cap = rec.task.capability
        heapq.heappush(self.queues.setdefault(cap, []), (-rec.task.priority, next(self._seq), rec.task.id))
        self.queued += 1
        self.queued_by_cap[cap] += 1
        self._pump(cap)

    def _dequeued(self, cap: str) -> None:
        self.queued -= 1
        self.queued_by_cap[cap] -= 1

    def _pump(self, cap: str) -> None:
        queue = self.queues.get(cap)
        while queue and self.dispatcher.has_free(cap):
            _, _, task_id = heapq.heappop(queue)
            if not self._is_queued(task_id):
                continue  # cancelled while queued
            self._dequeued(cap)
            rec = self.records[task_id]
            agent = self.dispatcher.acquire(cap)
            rec.attempt = self._spawn(self._run_attempt(rec, agent))

    def _agents_ready(self, agents: list[AgentSlot]) -> None:
        self.dispatcher.add(agents)
        for cap in {c for a in agents for c in a.capabilities}:
            self._pump(cap)

    def _agents_lost(self, agents: list[AgentSlot]) -> None:
        self.dispatcher.remove(agents)

    def _timeout_s(self, task: Task) -> float:
        return (
            task.timeout_s or self.cap_timeouts_s.get(task.capability) or self.config.queen.default_timeout_s
        )

    async def _run_attempt(self, rec: _Record, agent: AgentSlot) -> None:
        task, res = rec.task, rec.result
        task.attempt += 1
        res.status, res.attempts = TaskStatus.RUNNING, task.attempt
        res.agent_id, res.swarm = agent.id, self.name
        res.timings.started_at, res.timings.finished_at = now(), None
        timeout_s = self._timeout_s(task)
        call = agent.host.handle.handle.remote(agent.id, task)
        # A timer that cancels the wait is cheaper than asyncio.wait_for's extra task per call.
        waiting = call if agent.host.local else asyncio.wrap_future(call.future())
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            waiting.cancel()

        timer = asyncio.get_running_loop().call_later(timeout_s, expire)
        error: tuple[str, str, TaskStatus] | None = None
        try:
            output = await waiting
        except asyncio.CancelledError:
            if not agent.host.local:
                ray.cancel(call)
            if not expired:
                raise  # cancelled by `cancel`, not by the timer
            error = (
                f"attempt {task.attempt} ran past {timeout_s} s",
                "TaskTimeoutError",
                TaskStatus.TIMED_OUT,
            )
        except RayTaskError as e:
            cause = e.cause if getattr(e, "cause", None) is not None else e
            error = (str(cause), type(cause).__name__, TaskStatus.FAILED)
        except (RayActorError, ActorUnavailableError) as e:
            error = (f"agent {agent.id} died: {type(e).__name__}", type(e).__name__, TaskStatus.FAILED)
            self._host_died(agent, error[0])
        except Exception as e:  # raised in this process by a co-located agent
            error = (str(e), type(e).__name__, TaskStatus.FAILED)
        finally:
            timer.cancel()
            agent.last_active = time.monotonic()
            self.dispatcher.release(agent)
            for cap in agent.capabilities:
                self._pump(cap)
        if error is None:
            agent.done += 1
            self._finish(rec, TaskStatus.SUCCEEDED, output=output)
            return
        agent.failed += 1
        self._retry_or_fail(rec, *error)

    def _host_died(self, agent: AgentSlot, reason: str) -> None:
        pool = self.pools.get(agent.pool)
        if pool is not None and agent.host.id in pool.hosts:
            pool.host_lost(agent.host, reason)

    def _retry_or_fail(self, rec: _Record, message: str, error_type: str, status: TaskStatus) -> None:
        task = rec.task
        max_retries = self.config.queen.max_retries if task.max_retries is None else task.max_retries
        if task.attempt > max_retries:
            self._finish(rec, status, error=message, error_type=error_type)
            return
        # Retries go back through the queue so another agent can take them; a decorator
        # style retry library (tenacity) would pin them to the call that failed.
        q = self.config.queen
        delay = min(q.max_retry_backoff_s, q.retry_backoff_s * 2 ** (task.attempt - 1))
        delay *= random.uniform(0.5, 1.0)
        rec.result.status, rec.result.error, rec.result.error_type = TaskStatus.RETRYING, message, error_type
        self.counts["retried"] += 1
        rec.attempt = None
        rec.timer = asyncio.get_running_loop().call_later(delay, self._retry, rec)

    def _retry(self, rec: _Record) -> None:
        rec.timer = None
        if rec.result.status is TaskStatus.RETRYING:
            limit = self.config.queen.max_queued_tasks
            if rec.task.capability in self.local_caps and self.queued < limit:
                self._enqueue(rec)
            else:
                self._finish(
                    rec,
                    TaskStatus.FAILED,
                    error=f"queue full at retry ({limit} queued)",
                    error_type="BackpressureError",
                )

    def _finish(
        self,
        rec: _Record,
        status: TaskStatus,
        output: Any = None,
        error: str | None = None,
        error_type: str | None = None,
    ) -> None:
        if rec.result.status.final:
            return  # results are recorded once; a late duplicate is ignored
        res = rec.result
        res.status, res.output, res.error, res.error_type = status, output, error, error_type
        res.timings.finished_at = now()
        rec.attempt = None
        rec.done.set()
        # Delegated tasks are counted where they run; here only as handed over.
        self.counts["delegated" if rec.delegated_to else status.value] += 1
        self.finished[res.task_id] = None
        while len(self.finished) > self.config.queen.keep_results:
            old, _ = self.finished.popitem(last=False)
            self.records.pop(old, None)

    # -- delegation -----------------------------------------------------------------------

    async def _hand_over(self, task: Task) -> tuple[str, str]:
        """Routes a task this swarm cannot run to another swarm, which accepts it."""
        visited = [*task.visited, self.name]
        if task.hops >= self.registry_config.max_hops:
            limit = self.registry_config.max_hops
            raise DelegationError(task.capability, f"hop limit {limit} reached", visited)
        target = await self._actor(names.REGISTRY).route.remote(task.capability, visited)
        onward = task.model_copy(
            update={
                "id": "",
                "hops": task.hops + 1,
                "visited": visited,
                "attempt": 0,
                "origin_swarm": task.origin_swarm or self.name,
            }
        )
        remote_id = await self._actor(names.queen(target)).submit.remote(onward)
        return target, remote_id

    async def _follow(self, rec: _Record) -> None:
        swarm, remote_id = rec.delegated_to
        try:
            remote = await self._actor(names.queen(swarm)).result.remote(remote_id, None)
        except (RayActorError, ActorUnavailableError) as e:
            self._finish(
                rec,
                TaskStatus.FAILED,
                error=f"swarm {swarm!r} was lost: {type(e).__name__}",
                error_type=type(e).__name__,
            )
            return
        res = rec.result
        res.agent_id, res.swarm, res.attempts = remote.agent_id, remote.swarm, remote.attempts
        res.timings.started_at = remote.timings.started_at
        self._finish(
            rec, remote.status, output=remote.output, error=remote.error, error_type=remote.error_type
        )

    # -- background -----------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                for pool in self.pools.values():
                    backlog = sum(self.queued_by_cap[c] for c in pool.capabilities)
                    pool.autoscale(backlog)
            except Exception:
                log.exception("autoscale failed in swarm %s", self.name)
