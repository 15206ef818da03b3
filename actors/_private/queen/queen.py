"""SwarmQueen: takes a swarm's tasks, journals them, queues them by priority, runs them on its
agents, and supervises those agents.

This module holds the actor: its state, its lifecycle and every method Ray callers use. The
queen's concerns live beside it, each a part of the one class: `admission.Admission` (taking
tasks in, the queue), `attempts.Attempts` (running an attempt on an agent, retries),
`rerouting.Rerouting` (queued tasks handed to other swarms, delegated tasks followed) and
`supervision.Supervision` (failed hosts, escalation, the background round). The parts that
need no actor are classes of their own: `task_book.TaskBook` (task records and their
transitions, each journaled and counted in one call; replay, compaction),
`task_queue.TaskQueue` (the priority queues and their counts), `dispatch.Dispatcher` (the
least-loaded agent), `delegator.Delegator` (hand-over to other swarms, following results
there, a breaker per target swarm) and `supervisor.Supervisor` (restart strategies and
intensity).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from typing import Any

import ray

from actors._private.agents.payload import payload_models
from actors._private.config import RegistryConfig, SwarmConfig, ToolAnnotationsConfig
from actors._private.metrics import SwarmMetrics
from actors._private.pool import ALIVE, AgentPool
from actors._private.queen.admission import Admission
from actors._private.queen.attempts import Attempts
from actors._private.queen.delegator import ActorPeers, Delegator
from actors._private.queen.dispatch import Dispatcher
from actors._private.queen.rerouting import Rerouting
from actors._private.queen.supervision import Supervision
from actors._private.queen.supervisor import FAILED, Supervisor
from actors._private.queen.task_book import TaskBook, TaskRecord
from actors._private.queen.task_queue import TaskQueue
from actors._private.task import Task, TaskResult, TaskStatus
from models._private.core import names, tracing
from models._private.core.config import import_object
from models._private.core.errors import TaskNotFoundError
from models._private.core.journal import Journal, journal_location

__all__ = ["SwarmQueen"]

log = logging.getLogger(__name__)

RESULTS_LINGER_S = 0.02  # how long `results_many` waits for more results once one is in
CATALOG_TIMEOUT_S = 10.0  # longest `catalog` waits for an agent class to list a family's capabilities


def _accepted(admitted: list[TaskRecord | Exception]) -> list[TaskRecord]:
    """The records of `_admit_all`, or the first task's error that refused it."""
    for a in admitted:
        if isinstance(a, BaseException):
            raise a
    return admitted  # type: ignore[return-value]


def tool_annotations(cls: type, capability: str, configured: ToolAnnotationsConfig | None) -> dict[str, Any]:
    """A capability's MCP tool annotations under their MCP names: its agent class's
    (`annotations`), each overridden by the capability's config where that sets it."""
    declared = ToolAnnotationsConfig.model_validate(getattr(cls, "annotations", {}).get(capability, {}))
    return {**declared.hints(), **(configured.hints() if configured is not None else {})}


class SwarmQueen(Admission, Attempts, Rerouting, Supervision):
    """The coordinator of one swarm; a named, detached Ray actor `queen:<swarm>`.

    Every accepted task is journaled before `submit` returns. A task whose capability the swarm
    offers waits in a per-capability priority queue until the dispatcher hands it the
    least-loaded agent; one the swarm lacks is routed by the registry to another swarm's queen,
    which accepts it before `submit` returns here. Either way the caller asks this queen for the
    result. After a crash, Ray restarts the queen, which replays its journal: pending tasks run
    again (execution is at-least-once), finished results are still there, and each task's
    result is recorded once.
    """

    def __init__(
        self,
        namespace: str,
        swarm: SwarmConfig,
        registry: RegistryConfig,
        trace: tracing.TracingConfig | None = None,
    ):
        # From the constructor, not `start`: Ray restarts a queen with the same arguments, and
        # a restarted queen is not started again.
        tracing.configure(trace, "swarmray.queen", namespace)
        self.trace = trace  # its hosts trace as it does (each its own process)
        self.namespace = namespace
        self.name = swarm.name
        self.config = swarm
        self.registry_config = registry
        self.local_caps = set(swarm.capabilities)
        self.local_families = [c for c in self.local_caps if names.is_family(c)]
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
        peers = ActorPeers(
            self._actor, lambda name: self._handles.pop(name, None), registry.route_cache_ttl_s
        )
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
                self.trace,
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
        tracing.flush()

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
        """Accepts several tasks with one journal write; those for other swarms are handed over
        together, one call per target swarm.

        A task refused raises its error (the first such, in order) once the others are
        accepted (and journaled), which a client that named its tasks can check with `result`.
        """
        try:
            admitted = await self._admit_all(tasks)
        finally:
            await self.journal.flush()
        return [rec.task.id for rec in _accepted(admitted)]

    async def accept_many(self, tasks: list[Task]) -> list[str | Exception]:
        """Accepts tasks another swarm's queen hands over, in one call and one journal write.

        Returns:
            Per task, in order, its id here or the error that refused it (the others are
            accepted): once every accepted task is journaled.
        """
        admitted = await self._admit_all(tasks)
        await self.journal.flush()
        return [a.task.id if isinstance(a, TaskRecord) else a for a in admitted]

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

    async def results_many(self, task_ids: list[str], wait_s: float | None = None) -> list[Any]:
        """Final results of several tasks in one call, for a queen following tasks it handed
        over: waits up to `wait_s` (None: no limit) until one has ended, then up to
        `RESULTS_LINGER_S` more while others end.

        Returns:
            Per task, in order: its final result, None while it runs, or TaskNotFoundError.
        """
        recs: list[TaskRecord | None] = []
        out: list[Any] = []
        for task_id in task_ids:
            try:
                recs.append(self._record(task_id))
                out.append(None)
            except TaskNotFoundError as e:
                recs.append(None)
                out.append(e)
        waiting = {asyncio.ensure_future(r.done.wait()) for r in recs if r and not r.done.is_set()}
        news = len(waiting) < len(task_ids)  # some have ended, or are unknown here
        try:
            if waiting and not news:
                _, waiting = await asyncio.wait(waiting, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
                news = len(waiting) < len(task_ids)
            if waiting and news:
                # Tasks handed over together tend to end together: one answer for the lot.
                _, waiting = await asyncio.wait(waiting, timeout=RESULTS_LINGER_S)
        finally:
            for w in waiting:
                w.cancel()
        for i, rec in enumerate(recs):
            if rec is not None and rec.done.is_set():
                out[i] = rec.result
        return out

    def routes_changed(self, generation: int) -> None:
        """The registry's routing changed (its `generation`): routes cached here are dropped."""
        peers = self.delegator.peers
        if isinstance(peers, ActorPeers):
            peers.routes_changed(generation)

    async def run(self, task: Task | dict, timeout_s: float | None = None) -> TaskResult:
        """Submits a task and waits for its result in one call.

        The acceptance is not synced on its own: it goes out with the result's journal write,
        and the caller has no task id to lose before then (a retry with the same task id is
        accepted once).
        """
        rec = await self._admit(task)  # its records ride with the result's write
        return await self.result(rec.task.id, timeout_s)

    async def run_many(self, tasks: list[Task | dict], timeout_s: float | None = None) -> list[TaskResult]:
        """Submits several tasks and waits for all their results in one call (see `run`);
        those for other swarms are handed over together, one call per target swarm."""
        admitted = _accepted(await self._admit_all(tasks))
        return [await self.result(rec.task.id, timeout_s) for rec in admitted]

    async def record_steps(self, task_id: str, attempt: int, agent_id: str, steps: list[Any]) -> int:
        """Journals steps (JSON) that attempt `attempt` of a task, running on `agent_id`,
        finished, in one write; returns once they are durable, with the task's count of steps.
        A later attempt of the task gets every step in `Task.steps`.

        Raises:
            TaskNotFoundError: the queen does not know the task.
            StaleAttemptError: the attempt no longer runs the task.
        """
        return await self.book.record_steps(self._record(task_id), attempt, agent_id, steps)

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
            "delegation": self._delegation_calls(),
            "journal": {
                "bytes": self.journal.size_bytes(),
                "compactions": self.counts["compactions"],
                "errors": self.counts["journal_errors"],
            },
            "agents": agents,
        }

    def _delegation_calls(self) -> dict[str, int]:
        """The calls delegation made (each for one or many tasks) and the registry generation
        its cached routes are of."""
        peers = self.delegator.peers
        if not isinstance(peers, ActorPeers):
            return {}
        return {
            "route_calls": peers.routings.calls,
            "hand_over_calls": peers.submits.calls,
            "follow_calls": peers.results.calls,
            "routes_generation": peers.generation,
        }

    def usage(self, by: list[str] | None = None, since: float | None = None) -> list[dict[str, Any]]:
        """What the tasks run here spent through the AI service (`TaskResult.usage`, journaled),
        one row per capability (`by=["capability"]`, the default) or one in all (`by=[]`),
        since a Unix time."""
        self._ensure_started()
        rows = self.book.usage.totals(["capability"] if by is None else by, since)
        return [{"swarm": self.name, **row} for row in rows]

    async def catalog(self) -> list[dict[str, Any]]:
        """Each capability the swarm offers: its description, pools and payload JSON Schema
        (None where the agent declares no payload model), for `swarm capabilities`; with
        `output_schema` where its agent class declares an output model (`outputs`) and
        `annotations` (MCP tool annotations) where the class or the capability's config sets any,
        the config's overriding the class's one by one.

        A family (`prefix.*`) is listed as the capabilities its agent class returns from
        `async catalog_entries(params, family, namespace)` (the pool's agent params, the family,
        and the system's Ray namespace, where the actors it may ask live), each of which may add
        `output_schema` and `annotations`; one whose class has none, or whose lookup fails, is
        listed as itself with a `note` saying why."""
        entries: dict[str, dict[str, Any]] = {}
        for pool in self.config.pools.values():
            cls = import_object(pool.agent.class_path)
            doc = (cls.__doc__ or "").strip().splitlines()
            described = {c.name: c.description for c in pool.agent.capabilities}
            configured = {c.name: c.annotations for c in pool.agent.capabilities}
            for cap in pool.agent.capability_names:
                members = await self._family_entries(cls, pool, cap) if names.is_family(cap) else [{}]
                for member in members:
                    name = member.get("capability", cap)
                    entry = entries.setdefault(
                        name, {"capability": name, "swarm": self.name, "description": "", "pools": []}
                    )
                    entry["pools"].append(pool.name)
                    entry["description"] = (
                        entry["description"]
                        or member.get("description")
                        or described.get(name)
                        or cls.descriptions.get(name)
                        or (doc[0] if doc else "")
                    )
                    if member:
                        entry.update(
                            {k: member[k] for k in ("output_schema", "annotations", "note") if k in member}
                        )
                        entry["schema"] = member.get("schema", member.get("payload_schema"))
                    else:
                        model = self.payloads.get(cap)
                        entry["schema"] = model.model_json_schema() if model is not None else None
                        if (output := cls.outputs.get(cap)) is not None:
                            entry["output_schema"] = output.model_json_schema()
                    if hints := tool_annotations(cls, cap, configured.get(cap)):
                        entry["annotations"] = {**entry.get("annotations", {}), **hints}
        return sorted(entries.values(), key=lambda e: e["capability"])

    async def _family_entries(self, cls: type, pool: Any, family: str) -> list[dict[str, Any]]:
        """The capabilities a family stands for now, by its agent class's `catalog_entries`
        (awaited here, at most CATALOG_TIMEOUT_S); the family itself with a note when the
        class has no such method, or it fails, or it returns something that is not a list of
        entries under the family."""
        lookup = getattr(cls, "catalog_entries", None)
        if lookup is None:
            return [{"note": "a family: any capability under it"}]
        try:
            listing = lookup(dict(pool.agent.params), family, namespace=self.namespace)
            found = await asyncio.wait_for(listing, CATALOG_TIMEOUT_S)
            members = [e for e in found if names.capability_offered([family], e["capability"]) == family]
        except Exception as e:
            log.warning("swarm %s: listing family %s failed: %s: %s", self.name, family, type(e).__name__, e)
            why = "timed out" if isinstance(e, asyncio.TimeoutError) else f"{type(e).__name__}: {e}"
            return [{"note": f"its capabilities could not be listed: {why}"}]
        return members

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

    # -- internals shared by the parts ------------------------------------------------------

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
