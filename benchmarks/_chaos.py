"""Chaos scenarios: kill agents, queens, the registry or whole nodes while tasks run, then count
what was lost and whether any task's result changed.

Tasks run `bench.nonce` (`benchmarks._agents.NonceAgent`), whose output is a fresh random nonce per run: a
task that ran twice (execution is at-least-once) must still report one result, forever. Every
result is read once when it arrives and again after the chaos, and the two must match.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import ray

from actors._private.task import TaskResult, TaskStatus
from models._private.core import names

__all__ = [
    "ChaosReport",
    "chaos_swarm",
    "kill_queen",
    "kill_random_agent",
    "kill_registry",
    "run_steady",
    "run_tasks",
]


@dataclass
class ChaosReport:
    """What a scenario did and what it lost."""

    submitted: int = 0
    completed: int = 0
    lost: int = 0
    duplicate_results: int = 0
    agent_kills: int = 0
    queen_kills: int = 0
    node_kills: int = 0
    registry_kills: int = 0
    journal_bytes_max: int = 0  # the largest journal seen while the scenario ran
    compactions: int = 0

    def add(self, other: ChaosReport) -> ChaosReport:
        """The sum of two reports (the larger of their journal peaks)."""
        out = ChaosReport(**{k: v + getattr(other, k) for k, v in asdict(self).items()})
        out.journal_bytes_max = max(self.journal_bytes_max, other.journal_bytes_max)
        return out

    def as_dict(self) -> dict[str, int]:
        """The report as a plain dict."""
        return asdict(self)


def chaos_swarm(agents: int = 4, per_actor: int = 1, **extra: Any) -> dict[str, Any]:
    """A swarm config of nonce agents that tolerates a kill every few hundred milliseconds."""
    return {
        "queen": {
            "max_retries": 3,
            "max_host_failures": 50,
            "retry_backoff_s": 0.05,
            "max_queued_tasks": 1_000_000,
        },
        "health": {"period_s": 0.5, "ping_timeout_s": 5},
        "supervision": {"strategy": "one_for_one", "max_restarts": 100_000, "period_s": 60},
        "pools": {
            "nonce": {
                "agent": {"class": "benchmarks._agents:NonceAgent", "max_concurrent_tasks": 4},
                "agents_per_actor": per_actor,
                "min_agents": agents,
                "max_agents": agents,
            }
        },
        **extra,
    }


def kill_random_agent(client: Any, swarm: str, rng: random.Random) -> bool:
    """Kills one alive agent host of `swarm` (and so its agents); False when none is alive."""
    hosts = [h for _, h, state in client._call(client.queen(swarm).hosts.remote) if state == "alive"]
    if not hosts:
        return False
    ray.kill(rng.choice(hosts), no_restart=True)
    return True


def kill_queen(client: Any, swarm: str, how: str = "ray") -> None:
    """Kills `swarm`'s queen so that Ray restarts it: `ray` uses ray.kill(no_restart=False),
    `process` sends SIGKILL to its process (this machine only)."""
    queen = client.queen(swarm)
    if how == "process":
        os.kill(client._call(queen.where.remote)["pid"], signal.SIGKILL)
    else:
        ray.kill(queen, no_restart=False)


def kill_registry(client: Any) -> None:
    """Kills the registry so that Ray restarts it with an empty table."""
    ray.kill(ray.get_actor(names.REGISTRY, namespace=client.namespace), no_restart=False)


def run_tasks(
    client: Any,
    swarm: str,
    tasks: int,
    *,
    work_s: float = 0.02,
    chaos: Callable[[], None] | None = None,
    chaos_every_s: float = 0.2,
    batch: int = 100,
    timeout_s: float = 600.0,
) -> ChaosReport:
    """Submits `tasks` nonce tasks to `swarm`, calls `chaos()` every `chaos_every_s` until all
    have ended, then checks each result is final, succeeded, and unchanged on a second read."""
    ids: list[str] = []
    for start in range(0, tasks, batch):
        n = min(batch, tasks - start)
        ids += client.submit_many("bench.nonce", [{"s": work_s}] * n, swarm=swarm)
    with _monkey(chaos, chaos_every_s):
        return _check(client, ids, time.monotonic() + timeout_s)


def run_steady(
    client: Any,
    swarm: str,
    duration_s: float,
    *,
    work_s: float = 0.01,
    batch: int = 20,
    lag: int = 5,
    chaos: Callable[[], None] | None = None,
    chaos_every_s: float = 0.5,
    timeout_s: float = 120.0,
) -> ChaosReport:
    """Submits batches of nonce tasks without pause for `duration_s` while `chaos()` runs every
    `chaos_every_s`, watching the journal's size and compactions as it goes.

    Results are read as the run goes, each batch `lag` batches after it was submitted and again
    `lag` batches later, so the queen may drop old results (`keep_results`) and its journal stay
    bounded however long the run.
    """

    def read(ids: list[str]) -> list[TaskResult]:
        return client._call(lambda: [client.queen(swarm).result.remote(i, timeout_s) for i in ids])

    report, peak = ChaosReport(), 0
    unread: deque[list[str]] = deque()
    read_once: deque[tuple[list[str], list[TaskResult]]] = deque()
    end = time.monotonic() + duration_s
    with _monkey(chaos, chaos_every_s):
        while (arriving := time.monotonic() < end) or unread or read_once:
            if arriving:
                ids = client.submit_many("bench.nonce", [{"s": work_s}] * batch, swarm=swarm)
                unread.append(ids)
                report.submitted += len(ids)
                peak = max(peak, client._call(client.queen(swarm).status.remote)["journal"]["bytes"])
            if unread and (len(unread) > lag or not arriving):
                ids = unread.popleft()
                read_once.append((ids, read(ids)))
            if read_once and (len(read_once) > lag or not (arriving or unread)):
                ids, first = read_once.popleft()
                _tally(report, first, read(ids))
    journal = client._call(client.queen(swarm).status.remote)["journal"]
    report.journal_bytes_max = max(peak, journal["bytes"])
    report.compactions = journal["compactions"]
    return report


@contextmanager
def _monkey(chaos: Callable[[], None] | None, every_s: float) -> Iterator[None]:
    """Calls `chaos()` every `every_s` on a thread while the block runs."""
    if chaos is None:
        yield
        return
    done = threading.Event()

    def loop() -> None:
        while not done.wait(every_s):
            chaos()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _check(client: Any, ids: list[str], deadline: float) -> ChaosReport:
    """Reads each result until it is final, then again: counts the lost and the changed."""
    report = ChaosReport(submitted=len(ids))
    first = [client.result(t, timeout_s=max(1.0, deadline - time.monotonic())) for t in ids]
    _tally(report, first, [client.result(t, timeout_s=5) for t in ids])
    return report


def _tally(report: ChaosReport, first: list[TaskResult], second: list[TaskResult]) -> None:
    """Counts a task lost unless its first read succeeded, and its result changed when a second
    read differs."""
    for a, b in zip(first, second, strict=True):
        if a.status is TaskStatus.SUCCEEDED:
            report.completed += 1
        else:
            report.lost += 1
        if a.status.final and (b.status != a.status or b.output != a.output):
            report.duplicate_results += 1
