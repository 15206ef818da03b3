"""SwarmQueen: takes a swarm's tasks, journals them, queues them by priority, runs them on its
agents, and supervises those agents.

The parts that need no actor live beside it: `task_queue.TaskQueue` (the priority queues and
their counts), `delegator.Delegator` (hand-over to other swarms, following results there, a
breaker per target swarm) and `task_book.TaskBook` (task records and their transitions, each
journaled and counted in one call; journal replay, compaction).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import RayTaskError

from actors._private import names
from actors._private.agents.payload import PERMANENT, check_payload, payload_models
from actors._private.config import RegistryConfig, SwarmConfig
from actors._private.metrics import SwarmMetrics
from actors._private.pool import ALIVE, DEAD, PENDING, RESTARTING, AgentPool, AgentSlot, HostSlot
from actors._private.queen.delegator import ActorPeers, DelegationLost, Delegator
from actors._private.queen.dispatch import Dispatcher
from actors._private.queen.supervisor import FAILED, Supervisor
from actors._private.queen.task_book import TaskBook, TaskRecord
from actors._private.queen.task_queue import TaskQueue
from actors._private.registry import FAILED as SWARM_FAILED
from actors._private.task import Task, TaskResult, TaskStatus, now
from models._private.core.config import import_object
from models._private.core.errors import (
    BackpressureError,
    DelegationError,
    SchedulingError,
    UnknownCapabilityError,
)
from models._private.core.journal import Journal, journal_location
from models._private.core.retry import TRANSIENT, backoff_s, unwrap_error
from models._private.usage import Spent

__all__ = ["SwarmQueen"]

AGENT_STATES = (ALIVE, PENDING, RESTARTING, DEAD)
log = logging.getLogger(__name__)

TICK_S = 0.5


class SwarmQueen:
    """The coordinator of one swarm; a named, detached Ray actor `queen:<swarm>`.

    Every accepted task is journaled before `submit` returns. A task whose capability the swarm
    offers waits in a per-capability priority queue until the dispatcher hands it the
    least-loaded agent; one the swarm lacks is routed by the registry to another swarm's queen,
    which accepts it before `submit` returns here. Either way the caller asks this queen for the
    result. After a crash, Ray restarts the queen, which replays its journal: pending tasks run
    again (execution is at-least-once), finished results are still there, and each task's
    result is recorded once.
    """

    def __init__(self, namespace: str, swarm: SwarmConfig, registry: RegistryConfig):
        self.namespace = namespace
        self.name = swarm.name
        self.config = swarm
        self.registry_config = registry
        self.local_caps = set(swarm.capabilities)
        self.cap_timeouts_s = swarm.capability_timeouts_s()
        pools = swarm.pools.values()
        self.payloads = payload_models((p.agent.class_path, p.agent.capability_names) for p in pools)
        self.metrics = SwarmMetrics(namespace, swarm.name)
        self.journal = Journal(
            journal_location(swarm.journal.uri, namespace, swarm.name),
            sync=swarm.journal.sync,
            system=namespace,
        )
        self.book = TaskBook(swarm.name, swarm.queen.keep_results, self.journal, self.metrics, swarm.queen)
        self.counts = self.book.counts  # one Counter: replayed, then live
        self.queue = TaskQueue()
        self.dispatcher = Dispatcher()
        self.pools: dict[str, AgentPool] = {}
        self.supervisor = Supervisor(swarm.supervision)
        peers = ActorPeers(self._actor, lambda name: self._handles.pop(name, None))
        self.delegator = Delegator(
            swarm.name, peers, registry.max_hops, swarm.delegation_breaker, swarm.queen
        )
        self._start_order = itertools.count()
        self._started = False
        self._background: set[asyncio.Task] = set()
        self._handles: dict[str, Any] = {}
        self._admitting: dict[str, asyncio.Event] = {}  # task ids whose admission is under way

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Replays the journal, creates the agent pools and registers; safe to call again.

        On a swarm failed by escalation, `start` rebuilds its agents at once.
        """
        self._ensure_started()
        if self.supervisor.state == FAILED:
            self._recover()
        for pool in self.pools.values():
            if pool.gave_up:  # `swarm up` tries a pool that could not start once more
                pool.start()
        await self._actor(names.REGISTRY).register.remote(self.registration())
        return self.status()

    def _ensure_started(self) -> None:
        # Also runs first thing after Ray restarts this actor: replay, then rebuild the pools.
        if self._started:
            return
        self._started = True
        pending = self.book.replay(self.journal.read(), self.local_caps)
        if pending:
            log.warning("swarm %s replayed %d unfinished tasks from its journal", self.name, len(pending))
        for pool_cfg in self.config.pools.values():
            self.pools[pool_cfg.name] = AgentPool(
                self.namespace,
                self.name,
                pool_cfg,
                self._agents_ready,
                self.dispatcher.remove,
                self.book.snapshots.get,
                self._start_order,
            )
        for pool in self.pools.values():
            pool.start()
        for rec in pending:
            if rec.delegated_to is not None:
                rec.attempt = self._spawn(self._follow(rec))
            else:
                self._enqueue(rec)
        self._spawn(self._tick_loop())

    async def stop(self, purge: bool = False) -> None:
        """Kills the agent pools; with `purge`, deletes the journal too (`swarm down`)."""
        for pool in self.pools.values():
            pool.stop()
        await self.journal.flush()
        self.journal.close()
        if purge:
            self.journal.purge()

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
        """Accepts a task and returns its id once the task is journaled.

        A task that carries an id (`<swarm>:<anything>`) is accepted once: submitting it again
        returns the same id, so a client may retry a submit whose answer it lost.

        Raises:
            BackpressureError: the queue holds `max_queued_tasks` tasks.
            PayloadError: the payload does not fit the capability's declared model.
            UnknownCapabilityError: no swarm offers the task's capability.
            DelegationError: the hop limit is reached or every offering swarm was visited.
        """
        rec = await self._admit(task)
        # Also for a retried submit: the first one's records are queued, and this waits for them.
        await self.journal.flush()
        return rec.task.id

    async def submit_many(self, tasks: list[Task | dict]) -> list[str]:
        """Accepts several tasks with one journal write.

        Stops at the first task refused and raises its error; the tasks before it stay accepted
        (and journaled), which a client that named its tasks can check with `result`.
        """
        admitted = []
        try:
            for t in tasks:
                admitted.append(await self._admit(t))
        finally:
            await self.journal.flush()
        return [rec.task.id for rec in admitted]

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
        """Submits a task and waits for its result in one call.

        The acceptance is not synced on its own: it goes out with the result's journal write,
        and the caller has no task id to lose before then (a retry with the same task id is
        accepted once).
        """
        rec = await self._admit(task)  # its records ride with the result's write
        return await self.result(rec.task.id, timeout_s)

    async def run_many(self, tasks: list[Task | dict], timeout_s: float | None = None) -> list[TaskResult]:
        """Submits several tasks and waits for all their results in one call (see `run`)."""
        admitted = [await self._admit(t) for t in tasks]
        return [await self.result(rec.task.id, timeout_s) for rec in admitted]

    async def cancel(self, task_id: str) -> bool:
        """Cancels a task that has not ended; returns whether it was cancelled."""
        rec = self._record(task_id)
        if rec.result.status.final or rec.final is not None:
            return False
        if rec.delegated_to is not None:
            await self.delegator.cancel(rec.delegated_to)
        if rec.timer is not None:
            rec.timer.cancel()
        self.queue.remove(rec.task.id)  # a no-op unless it still waits for an agent
        if rec.attempt is not None:
            rec.attempt.cancel()
        self.book.finish(
            rec, TaskStatus.CANCELLED, error="cancelled by request", error_type="TaskCancelledError"
        )
        await rec.done.wait()
        return True

    def status(self) -> dict[str, Any]:
        """Queue depths, task counts, supervision and every agent's state."""
        agents = [row for pool in self.pools.values() for row in pool.describe()]
        delegated = TaskStatus.DELEGATED
        return {
            "swarm": self.name,
            "capabilities": sorted(self.local_caps),
            "queued": len(self.queue),
            "queue_depth": self.queue.depths(),
            "running": sum(a["inflight"] for a in agents),
            "delegated_out": sum(1 for r in self.book.records.values() if r.result.status is delegated),
            "tasks": {
                s: self.counts[s]
                for s in (
                    "accepted",
                    "succeeded",
                    "failed",
                    "timed_out",
                    "cancelled",
                    "retried",
                    "delegated",
                    "replayed",
                    "duplicates_ignored",
                )
            },
            "supervision": self.supervisor.describe(),
            "breakers": self.delegator.breaker_states(),
            "journal": {
                "bytes": self.journal.size_bytes(),
                "compactions": self.counts["compactions"],
                "errors": self.counts["journal_errors"],
            },
            "agents": agents,
        }

    def usage(self, by: list[str] | None = None, since: float | None = None) -> list[dict[str, Any]]:
        """What the tasks run here spent through the AI service (`TaskResult.usage`, journaled),
        one row per capability (`by=["capability"]`, the default) or one in all (`by=[]`),
        since a Unix time."""
        self._ensure_started()
        rows = self.book.usage.totals(["capability"] if by is None else by, since)
        return [{"swarm": self.name, **row} for row in rows]

    def catalog(self) -> list[dict[str, Any]]:
        """Each capability the swarm offers: its description, pools and payload JSON Schema
        (None where the agent declares no payload model), for `swarm capabilities`."""
        entries: dict[str, dict[str, Any]] = {}
        for pool in self.config.pools.values():
            cls = import_object(pool.agent.class_path)
            doc = (cls.__doc__ or "").strip().splitlines()
            described = {c.name: c.description for c in pool.agent.capabilities}
            for cap in pool.agent.capability_names:
                entry = entries.setdefault(
                    cap, {"capability": cap, "swarm": self.name, "description": "", "pools": []}
                )
                entry["pools"].append(pool.name)
                entry["description"] = (
                    entry["description"]
                    or described.get(cap)
                    or cls.descriptions.get(cap)
                    or (doc[0] if doc else "")
                )
                model = self.payloads.get(cap)
                entry["schema"] = model.model_json_schema() if model is not None else None
        return sorted(entries.values(), key=lambda e: e["capability"])

    def where(self) -> dict[str, Any]:
        """The queen's process id and node, for operators and chaos tests."""
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}

    def load(self) -> dict[str, Any]:
        """Numbers the registry balances on."""
        slots = sum(a.max_concurrent for p in self.pools.values() for a in p.agents if a.host.state == ALIVE)
        running = sum(a.inflight for p in self.pools.values() for a in p.agents)
        return {"queued": len(self.queue), "running": running, "slots": slots}

    # -- supervision hooks (called by the health monitor) -----------------------------------

    def hosts(self) -> list[tuple[str, Any, str]]:
        """(host id, actor handle, state) of every host in its own actor, in start order.

        Co-located hosts are left out: they live exactly as long as this queen.
        """
        self._ensure_started()
        return [(h.id, h.handle, h.state) for h in self._hosts() if not h.local]

    def report(self) -> dict[str, Any]:
        """One health round's worth: hosts to ping, registration, load and supervision state."""
        return {
            "hosts": self.hosts(),
            "registration": self.registration(),
            "load": self.load(),
            "state": self.supervisor.state,
            "reason": self.supervisor.reason,
        }

    def replace_hosts(self, host_ids: list[str], reason: str) -> int:
        """Handles hosts the monitor found dead or stuck as failed children; returns how many."""
        failed = [h for h in self._hosts() if h.id in set(host_ids)]
        for host in failed:
            self._child_failed(host, reason)
        return len(failed)

    # -- internals: admission and the queue ------------------------------------------------

    def _actor(self, name: str) -> Any:
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = ray.get_actor(name, namespace=self.namespace)
        return handle

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _record(self, task_id: str) -> TaskRecord:
        self._ensure_started()
        return self.book.get(task_id)

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
        task.submitted_at = task.submitted_at or now()
        local = task.capability in self.local_caps
        if local:  # a payload that cannot work is refused now, not failed after retries
            check_payload(self.payloads.get(task.capability), task.capability, task.payload)
        target = None
        failed = self.supervisor.state == FAILED
        if local and (failed or (never := self._unrunnable(task.capability))):
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

    def _enqueue(self, rec: TaskRecord) -> None:
        rec.result.status = TaskStatus.QUEUED
        self.queue.push(rec.task.id, rec.task.capability, rec.task.priority)
        self._pump(rec.task.capability)

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

    def _timeout_s(self, task: Task) -> float:
        return (
            task.timeout_s or self.cap_timeouts_s.get(task.capability) or self.config.queen.default_timeout_s
        )

    # -- internals: running an attempt -----------------------------------------------------

    async def _run_attempt(self, rec: TaskRecord, agent: AgentSlot) -> None:
        task, res = rec.task, rec.result
        self.book.start_attempt(rec, agent.id)
        timeout_s = self._timeout_s(task)
        host = agent.host
        call = host.handle.handle.remote(agent.id, task)
        # A timer that cancels the wait is cheaper than asyncio.wait_for's extra task per call.
        # Locally the wait is shielded, so that cancelling it does not wait for the work.
        waiting = asyncio.shield(call) if host.local else asyncio.wrap_future(call.future())
        expired = held = False

        def expire() -> None:
            nonlocal expired
            expired = True
            waiting.cancel()

        timer = asyncio.get_running_loop().call_later(timeout_s, expire)
        error: tuple[str, str, TaskStatus] | None = None
        host_lost = permanent = False
        try:
            output, state, spent = await waiting
            self._spent(res, spent)
        except asyncio.CancelledError:
            # Ask the work to stop; its agent stays taken until it has (see _hold).
            if host.local:
                call.cancel()
            else:
                ray.cancel(call)
            held = True
            if not expired:
                raise  # cancelled by `cancel`, not by the timer
            error = (
                f"attempt {task.attempt} ran past {timeout_s} s",
                "TaskTimeoutError",
                TaskStatus.TIMED_OUT,
            )
        except RayTaskError as e:
            cause = unwrap_error(e)
            error = (str(cause), type(cause).__name__, TaskStatus.FAILED)
            permanent = isinstance(cause, PERMANENT)
            self._spent(res, getattr(cause, "spent", None))
        except TRANSIENT as e:
            error = (f"agent {agent.id} was lost: {type(e).__name__}", type(e).__name__, TaskStatus.FAILED)
            host_lost = True
            self._child_failed(host, error[0])
        except Exception as e:  # raised in this process by a co-located agent
            error = (str(e), type(e).__name__, TaskStatus.FAILED)
            permanent = isinstance(e, PERMANENT)
            self._spent(res, getattr(e, "spent", None))
        finally:
            timer.cancel()
            if held:
                self._hold(agent, call)
            else:
                self._free(agent)
        if error is None:
            agent.done += 1
            if state is not None:
                self.book.checkpoint(agent.id, state)
            self.book.finish(rec, TaskStatus.SUCCEEDED, output=output)
            return
        agent.failed += 1
        self._retry_or_fail(rec, *error, host_lost=host_lost, permanent=permanent)

    @staticmethod
    def _spent(res: TaskResult, spent: Spent | dict[str, int] | None) -> None:
        # A task's usage sums its attempts that ended with an answer or an error; what a
        # timed-out or lost attempt spent only the AI service's own ledger knows.
        if spent:
            res.usage = res.usage or Spent()
            res.usage.add(Spent.model_validate(spent))

    def _free(self, agent: AgentSlot) -> None:
        agent.last_active = time.monotonic()
        self.dispatcher.release(agent)
        for cap in agent.capabilities:
            self._pump(cap)

    def _hold(self, agent: AgentSlot, call: Any) -> None:
        """Frees `agent`'s slot once a cancelled call has really ended: a sync agent's thread
        runs on until its function returns. A host whose work outlives `stuck_after_s` is a
        failed child, replaced (its process, and so the thread, goes with it)."""
        host = agent.host
        end = call if host.local else asyncio.wrap_future(call.future())
        stuck_s = self.config.queen.stuck_after_s

        def stuck() -> None:
            if not end.done() and not host.local:
                self._child_failed(host, f"a cancelled task still ran {stuck_s:g} s later (stuck)")

        watchdog = asyncio.get_running_loop().call_later(stuck_s, stuck)

        def ended(done: asyncio.Future) -> None:
            watchdog.cancel()
            if not done.cancelled():
                done.exception()  # retrieved: the outcome was settled when the call was cancelled
            self._free(agent)

        end.add_done_callback(ended)

    def _retry_or_fail(
        self,
        rec: TaskRecord,
        message: str,
        error_type: str,
        status: TaskStatus,
        host_lost: bool = False,
        permanent: bool = False,
    ) -> None:
        task, q = rec.task, self.config.queen
        max_retries = q.max_retries if task.max_retries is None else task.max_retries
        if host_lost:
            # The agent's process died under the task: not the task's fault, so it does not use
            # up max_retries, within a bound that stops a task that kills every agent it meets.
            rec.host_failures += 1
            task.attempt -= 1
            exhausted = rec.host_failures > q.max_host_failures
        else:  # bad input fails the same way on every agent: no retries
            exhausted = permanent or task.attempt > max_retries
        if exhausted:
            self.book.finish(rec, status, error=message, error_type=error_type)
            return
        # Retries go back through the queue so another agent can take them; a decorator
        # style retry library (tenacity) would pin them to the call that failed.
        delay = backoff_s(task.attempt, q.retry_backoff_s, q.max_retry_backoff_s)
        self.book.retry(rec, message, error_type)
        rec.timer = asyncio.get_running_loop().call_later(delay, self._retry, rec)

    def _retry(self, rec: TaskRecord) -> None:
        rec.timer = None
        if rec.result.status is TaskStatus.RETRYING:
            self._enqueue(rec)  # already accepted: a retry is never refused for a full queue

    def _unrunnable(self, cap: str) -> str:
        """Why no agent of this swarm can ever run `cap` ("" if one may): each pool offering it
        gave up starting, or asks for resources the cluster cannot offer."""
        reasons = [(p.config.name, p.unrunnable()) for p in self.pools.values() if cap in p.capabilities]
        if not reasons or not all(why for _, why in reasons):
            return ""
        return "; ".join(f"pool {name!r}: {why}" for name, why in reasons)

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
            # counted=False keeps what this path always did: its hand-overs were never counted
            # in tasks_delegated, unlike _reroute's (a drift reported as a bug, not fixed here).
            await self._hand_over_queued(rec, unplaced=fail, counted=False)

    # -- internals: supervision and delegation ----------------------------------------------

    def _hosts(self) -> list[HostSlot]:
        """Every host of the swarm in the order it started, but those that could not start."""
        hosts = (h for p in self.pools.values() for h in p.hosts.values() if h.state != DEAD)
        return sorted(hosts, key=lambda h: h.seq)

    def _pool_of(self, host: HostSlot) -> AgentPool | None:
        for pool in self.pools.values():
            if pool.hosts.get(host.id) is host:
                return pool
        return None

    def _child_failed(self, host: HostSlot, reason: str) -> None:
        """A host died, hung or failed to start: restart per strategy, or escalate."""
        pool = self._pool_of(host)
        if pool is None:
            return  # already restarted or removed
        if self.supervisor.state == FAILED:
            pool.remove(host, reason)
            return
        if not self.supervisor.allow_restart():
            self._escalate(self.supervisor.escalate(f"{host.id}: {reason}"))
            return
        strategy = self.supervisor.config.strategy
        for victim in self.supervisor.victims(host, self._hosts()):
            victim_pool = self._pool_of(victim)
            why = reason if victim is host else f"{strategy} restart after {host.id} failed"
            victim_pool.restart(victim, why)
            self.metrics.restarted(victim_pool.config.name)

    def _escalate(self, reason: str) -> None:
        log.error("swarm %s failed: %s", self.name, reason)
        self.metrics.escalated()
        for pool in self.pools.values():
            pool.stop()
        self._actor(names.REGISTRY).mark.remote(self.name, SWARM_FAILED, reason)  # no need to wait
        for rec in list(self.book.records.values()):
            if rec.result.status is TaskStatus.QUEUED:
                self._spawn(self._reroute(rec))
        if self.supervisor.config.recover_after_s is not None:
            asyncio.get_running_loop().call_later(self.supervisor.config.recover_after_s, self._recover)

    def _recover(self) -> None:
        if self.supervisor.state != FAILED:
            return
        log.warning("swarm %s rebuilds its agents after escalation", self.name)
        self.supervisor.recover()
        for pool in self.pools.values():
            pool.start()

    async def _reroute(self, rec: TaskRecord) -> None:
        """Sends a queued task of a failed swarm to another swarm offering its capability; if
        nobody else offers it, it waits here for the agents to come back."""
        if not self.queue.remove(rec.task.id):
            return  # no longer waiting here: cancelled, or taken by an agent
        await self._hand_over_queued(rec, unplaced=self._enqueue)

    async def _hand_over_queued(
        self, rec: TaskRecord, unplaced: Callable[[TaskRecord], None], counted: bool = True
    ) -> None:
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
        self.book.delegate(rec, target, counted=counted)
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

    def _gauges(self) -> None:
        agents: Counter[tuple[str, str]] = Counter({(p, s): 0 for p in self.pools for s in AGENT_STATES})
        for pool in self.pools.values():
            for host in pool.hosts.values():
                agents[(pool.config.name, host.state)] += len(host.agents)
        running = sum(a.inflight for p in self.pools.values() for a in p.agents)
        depths = {cap: self.queue.depth(cap) for cap in sorted(self.local_caps)}
        self.metrics.gauges(depths, running, dict(agents), self.delegator.breaker_states())

    # -- background -----------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        limit = self.config.journal.compact_after_mb * 2**20
        base = 0  # size right after the last compaction
        compaction: asyncio.Task | None = None

        async def compact() -> None:
            nonlocal base
            try:
                await self.book.compact()
            except Exception:
                log.exception("compaction failed in swarm %s", self.name)
                return
            base = self.journal.size_bytes()

        while True:
            await asyncio.sleep(TICK_S)
            try:
                if self.supervisor.state != FAILED:
                    for pool in self.pools.values():
                        pool.autoscale(sum(self.queue.depth(c) for c in pool.capabilities))
                    for cap, depth in self.queue.depths().items():
                        if depth and (reason := self._unrunnable(cap)):
                            self._spawn(self._give_up_queued(cap, reason))
                # Compact past the limit, and only once the journal has doubled since the last
                # compaction, so that live state above the limit is not rewritten every tick.
                # In the background: a tick never waits on the disk.
                idle = compaction is None or compaction.done()
                if idle and self.journal.size_bytes() > max(limit, 2 * base):
                    compaction = self._spawn(compact())
                self._gauges()
            except Exception:
                log.exception("background round failed in swarm %s", self.name)
