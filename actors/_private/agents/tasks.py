"""TaskClient: how an agent reaches the system's queens and registry from its host: child tasks
(routed by capability, submitted, waited for), the capability catalog, and the steps it
journals with the task it runs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import RayTaskError

from actors._private.task import Task, TaskResult
from models._private.core import names, tracing
from models._private.core.retry import unwrap_error

__all__ = ["TaskClient"]


class TaskClient:
    """An agent's calls to the registry and the queens (a host's agents share one).

    Each call goes to the named, detached actors, so a child task is admitted like any other:
    routing, delegation, payload checks, breakers, supervision, keys and budgets apply.
    Errors an actor raised come back as themselves (a `PayloadError`, not Ray's wrapper).

    Args:
        ray_namespace: The system's Ray namespace.
        actor: name -> actor handle; default the named actor in `ray_namespace`.
    """

    def __init__(self, ray_namespace: str, actor: Callable[[str], Any] | None = None):
        self.ray_namespace = ray_namespace
        self._actor = actor or (lambda name: ray.get_actor(name, namespace=ray_namespace))
        self._handles: dict[str, Any] = {}

    def _get(self, name: str) -> Any:
        if name not in self._handles:
            self._handles[name] = self._actor(name)
        return self._handles[name]

    async def _call(self, actor: str, method: str, *args: Any) -> Any:
        try:
            return await getattr(self._get(actor), method).remote(*args)
        except RayTaskError as e:
            raise unwrap_error(e) from None

    async def record_steps(self, task: Task, swarm: str, agent_id: str, steps: list[Any]) -> int:
        """Journals `steps` (JSON) with `task` in the queen of `swarm`, whose agent `agent_id`
        runs the task, in one write; returns once durable (see `SwarmQueen.record_steps`).

        Raises:
            StaleAttemptError: this attempt no longer runs the task.
        """
        return await self._call(names.queen(swarm), "record_steps", task.id, task.attempt, agent_id, steps)

    async def route(self, capability: str) -> str:
        """The swarm the registry picks to run a task of `capability`.

        Raises:
            UnknownCapabilityError, DelegationError.
        """
        return await self._call(names.REGISTRY, "route", capability, [])

    @staticmethod
    def new_task_id(swarm: str) -> str:
        """A fresh task id for `swarm`'s queen: a client that names its task may submit it again."""
        return f"{swarm}:{uuid.uuid4().hex[:16]}"

    async def submit(self, task: Task) -> str:
        """Submits a named task to the queen its id names; returns the id once journaled. A
        second submit of the same id is accepted once (the queen returns the same id).

        Raises:
            PayloadError, BackpressureError, UnknownCapabilityError, DelegationError.
        """
        if task.trace is None and (trace := tracing.carrier()) is not None:
            task = task.model_copy(update={"trace": trace})  # the child nests in the agent's span
        return await self._call(names.queen(task.id.partition(":")[0]), "submit", task)

    async def result(self, task_id: str, timeout_s: float | None) -> TaskResult:
        """The task's result, waiting up to `timeout_s`; non-final at the deadline."""
        return await self._call(names.queen(task_id.partition(":")[0]), "result", task_id, timeout_s)

    async def kv_get(self, key: str) -> Any:
        """The value under `key` in the registry's key-value store (None: unset)."""
        return await self._call(names.REGISTRY, "kv_get", key)

    async def catalog(self) -> list[dict[str, Any]]:
        """Every capability of every registered swarm whose queen answers (`SwarmQueen.catalog`
        entries); a swarm whose queen does not (restarting, gone) is left out."""
        swarms = [row["name"] for row in await self._call(names.REGISTRY, "table")]
        found = await asyncio.gather(
            *(self._call(names.queen(s), "catalog") for s in swarms), return_exceptions=True
        )
        return [e for entries in found if not isinstance(entries, BaseException) for e in entries]
