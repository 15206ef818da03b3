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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import ray

from actors._private import names
from actors._private.task import TaskStatus

__all__ = ["ChaosReport", "chaos_swarm", "kill_queen", "kill_random_agent", "kill_registry", "run_tasks"]


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

    def add(self, other: ChaosReport) -> ChaosReport:
        """The sum of two reports."""
        return ChaosReport(**{k: v + getattr(other, k) for k, v in asdict(self).items()})

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
    report = ChaosReport()
    ids: list[str] = []
    for start in range(0, tasks, batch):
        n = min(batch, tasks - start)
        ids += client.submit_many("bench.nonce", [{"s": work_s}] * n, swarm=swarm)
    report.submitted = len(ids)
    done = threading.Event()

    def monkey() -> None:
        while not done.wait(chaos_every_s):
            chaos()

    thread = threading.Thread(target=monkey, daemon=True) if chaos else None
    if thread:
        thread.start()
    deadline = time.monotonic() + timeout_s
    first = {}
    try:
        for task_id in ids:
            first[task_id] = client.result(task_id, timeout_s=max(1.0, deadline - time.monotonic()))
    finally:
        done.set()
        if thread:
            thread.join()
    second = {task_id: client.result(task_id, timeout_s=5) for task_id in ids}
    for task_id in ids:
        a, b = first[task_id], second[task_id]
        if a.status is TaskStatus.SUCCEEDED:
            report.completed += 1
        else:
            report.lost += 1
        if a.status.final and (b.status != a.status or b.output != a.output):
            report.duplicate_results += 1
    return report
