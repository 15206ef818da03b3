"""The swarms' Prometheus metrics (`ray.util.metrics`): tasks, their latencies, queues, agents,
supervision, delegation breakers, swarms' health and memory stores.

Every metric carries `system` (the Ray namespace) and, where it has one, `swarm`. Counters are
counted by the live process only, never again when a restarted queen replays its journal.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager
from typing import Any

from actors._private.registry import DEGRADED, FAILED, HEALTHY, UNREACHABLE
from models._private.core.metrics import BREAKER_VALUES, LATENCY_BUCKETS_S, PREFIX, keep, tag_values, timed

__all__ = ["HEALTH_VALUES", "MemoryMetrics", "SwarmMetrics", "swarm_health"]

HEALTH_VALUES = {HEALTHY: 0, DEGRADED: 1, FAILED: 2, UNREACHABLE: 3}
"""A swarm's health as the value of its gauge: the worse, the higher (alerts compare with >=)."""

_TASK = ("system", "swarm", "capability")


class _Definitions:
    def __init__(self) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        def latency(name: str, doc: str) -> Histogram:
            return Histogram(PREFIX + name, doc, boundaries=LATENCY_BUCKETS_S, tag_keys=_TASK)

        self.submitted = Counter(PREFIX + "tasks_submitted", "Tasks a queen accepted.", tag_keys=_TASK)
        self.completed = Counter(
            PREFIX + "tasks_completed",
            "Tasks that ended where they ran, by status: succeeded, failed, timed_out, cancelled.",
            tag_keys=(*_TASK, "status"),
        )
        self.retried = Counter(
            PREFIX + "tasks_retried", "Attempts that failed and were queued again.", tag_keys=_TASK
        )
        self.delegated = Counter(
            PREFIX + "tasks_delegated", "Tasks handed to another swarm (`to`).", tag_keys=(*_TASK, "to")
        )
        self.queue_wait_s = latency("task_queue_wait_seconds", "From acceptance to the last attempt's start.")
        self.run_s = latency("task_run_seconds", "The last attempt's run.")
        self.latency_s = latency("task_latency_seconds", "From acceptance to the final result, end to end.")
        self.queue_depth = Gauge(PREFIX + "queue_depth", "Tasks waiting for an agent.", tag_keys=_TASK)
        self.running = Gauge(
            PREFIX + "tasks_running", "Tasks agents are running now.", tag_keys=("system", "swarm")
        )
        self.agents = Gauge(
            PREFIX + "agents",
            "Agents by state: alive, pending, restarting, dead.",
            tag_keys=("system", "swarm", "pool", "state"),
        )
        self.restarts = Counter(
            PREFIX + "supervisor_restarts",
            "Agent hosts the supervisor restarted (each victim of a strategy counts).",
            tag_keys=("system", "swarm", "pool"),
        )
        self.escalations = Counter(
            PREFIX + "supervisor_escalations",
            "Times a swarm failed for exceeding its restart intensity.",
            tag_keys=("system", "swarm"),
        )
        self.breaker = Gauge(
            PREFIX + "delegation_breaker_state",
            "A queen's breaker toward another swarm: 0 closed, 1 half open, 2 open.",
            tag_keys=("system", "swarm", "target"),
        )
        self.health = Gauge(
            PREFIX + "swarm_health",
            "A swarm's health as its monitor last found it: 0 healthy, 1 degraded, 2 failed, 3 unreachable.",
            tag_keys=("system", "swarm"),
        )
        memory = ("system", "store", "operation")
        self.memory_s = Histogram(
            PREFIX + "memory_operation_seconds",
            "A memory store's operations (upsert, delete, get, search, sweep, snapshot), lock wait included.",
            boundaries=LATENCY_BUCKETS_S,
            tag_keys=memory,
        )
        self.memory_errors = Counter(
            PREFIX + "memory_operation_errors", "Memory store operations that raised.", tag_keys=memory
        )
        self.memory_records = Gauge(
            PREFIX + "memory_records", "Records a memory store holds.", tag_keys=("system", "store")
        )


@functools.cache
def _defs() -> _Definitions:
    return _Definitions()


class SwarmMetrics:
    """One queen's metrics."""

    def __init__(self, system: str, swarm: str):
        self.system, self.swarm = system, swarm
        self.defs = _defs()

    def _tags(self, capability: str, **more: Any) -> dict[str, str]:
        return tag_values(system=self.system, swarm=self.swarm, capability=capability, **more)

    def submitted(self, capability: str) -> None:
        self.defs.submitted.inc(1, self._tags(capability))

    def delegated(self, capability: str, to: str) -> None:
        self.defs.delegated.inc(1, self._tags(capability, to=to))

    def retried(self, capability: str) -> None:
        self.defs.retried.inc(1, self._tags(capability))

    def ended(self, result: Any, ran_here: bool) -> None:
        """A final result: counted and timed where the task ran; a task this queen handed on
        counts only its end-to-end latency here."""
        tags, t = self._tags(result.capability), result.timings
        if t.finished_at is not None:
            self.defs.latency_s.observe(max(0.0, t.finished_at - t.submitted_at), tags)
        if not ran_here:
            return
        self.defs.completed.inc(1, self._tags(result.capability, status=result.status.value))
        if t.queue_s is not None:
            self.defs.queue_wait_s.observe(max(0.0, t.queue_s), tags)
        if t.run_s is not None:
            self.defs.run_s.observe(max(0.0, t.run_s), tags)

    def restarted(self, pool: str) -> None:
        self.defs.restarts.inc(1, tag_values(system=self.system, swarm=self.swarm, pool=pool))

    def escalated(self) -> None:
        self.defs.escalations.inc(1, tag_values(system=self.system, swarm=self.swarm))

    def gauges(
        self,
        depths: dict[str, int],
        running: int,
        agents: dict[tuple[str, str], int],
        breakers: dict[str, str],
    ) -> None:
        """The queen's state now: queue depth per capability, tasks running, agents per
        (pool, state), and each delegation breaker's state."""
        for capability, depth in depths.items():
            keep(self.defs.queue_depth, depth, system=self.system, swarm=self.swarm, capability=capability)
        keep(self.defs.running, running, system=self.system, swarm=self.swarm)
        for (pool, state), n in agents.items():
            keep(self.defs.agents, n, system=self.system, swarm=self.swarm, pool=pool, state=state)
        for target, state in breakers.items():
            value = BREAKER_VALUES.get(state, 0)
            keep(self.defs.breaker, value, system=self.system, swarm=self.swarm, target=target)


def swarm_health(system: str, swarm: str, health: str) -> None:
    """A swarm's health (healthy, degraded, failed, unreachable), as its health monitor found it
    in its last round; kept in every report until the next round."""
    keep(_defs().health, HEALTH_VALUES[health], system=system, swarm=swarm)


class MemoryMetrics:
    """One memory store's metrics."""

    def __init__(self, system: str, store: str):
        self.system, self.store = system, store
        self.defs = _defs()

    def timed(self, operation: str) -> AbstractContextManager[None]:
        """Times an operation; one that raises is also counted as an error."""
        tags = tag_values(system=self.system, store=self.store, operation=operation)
        return timed(self.defs.memory_s, self.defs.memory_errors, tags)

    def records(self, n: int) -> None:
        keep(self.defs.memory_records, n, system=self.system, store=self.store)
