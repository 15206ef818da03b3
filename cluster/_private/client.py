"""The client a driver uses to submit tasks to a running system and read their results."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import ray

from actors._private.services import TRACING_KEY
from actors._private.task import Task, TaskResult
from cluster._private.connection import call, connect, registry_of
from cluster._private.status import status
from cluster._private.usage import usage
from models._private.core import names, tracing
from models._private.core.errors import (
    SwarmNotFoundError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    UnknownCapabilityError,
)

__all__ = ["Client", "unwrap"]


class Client:
    """Submits tasks to a running system and reads their results.

    Calls ride out a queen or registry that Ray is restarting: they are retried with
    exponential backoff (tenacity) for up to `retry_s`. Submits are safe to retry because the
    client names each task itself and a queen accepts a task id once.

    Example:
        client = Client()
        result = client.run("text.stats", {"text": "Ray runs actors."})
        print(result.output["words"])
    """

    def __init__(self, namespace: str = "swarmray", address: str | None = None, retry_s: float = 60.0):
        connect(address, namespace)
        self.namespace = namespace
        self.registry = registry_of(namespace)
        self._queens: dict[str, Any] = {}
        self.retry_s = retry_s
        # This driver traces its submits as the system does (`swarm up` published how).
        published = self._call(lambda: self.registry.kv_get.remote(TRACING_KEY))
        if published:
            tracing.configure(tracing.TracingConfig.model_validate(published), "swarmray.client", namespace)

    def _call(self, make_ref: Callable[[], Any], timeout_s: float | None = None) -> Any:
        # A queen made anew (after `down` and `up`) has a new handle: forget the cached ones.
        return call(make_ref, timeout_s, self.retry_s, on_retry=self._queens.clear)

    def queen(self, swarm: str) -> Any:
        """The actor handle of `swarm`'s queen."""
        if swarm not in self._queens:
            try:
                self._queens[swarm] = ray.get_actor(names.queen(swarm), namespace=self.namespace)
            except ValueError:
                known = list(self._call(self.registry.system_config.remote).get("swarms", {}))
                raise SwarmNotFoundError(swarm, known) from None
        return self._queens[swarm]

    def _task(
        self, capability: str, payload: dict | None, swarm: str | None, **fields: Any
    ) -> tuple[str, Task]:
        if swarm is None:
            swarm = self._call(lambda: self.registry.route.remote(capability, []))
        task_id = f"{swarm}:{uuid.uuid4().hex[:16]}"
        task = Task(
            id=task_id, capability=capability, payload=payload or {}, trace=tracing.carrier(), **fields
        )
        return swarm, task

    def submit(
        self,
        capability: str,
        payload: dict | None = None,
        *,
        swarm: str | None = None,
        priority: int = 0,
        timeout_s: float | None = None,
        max_retries: int | None = None,
    ) -> str:
        """Submits a task and returns its id once the queen has journaled it.

        Args:
            capability: What the task needs, e.g. 'text.stats'.
            payload: The agent's input.
            swarm: The swarm whose queen takes the task; None lets the registry choose.
            priority: Higher runs first.
            timeout_s: Per-attempt timeout.
            max_retries: Extra attempts after a failure.

        Raises:
            UnknownCapabilityError, BackpressureError, DelegationError, SwarmNotFoundError.
        """
        with _submitting(capability, 1) as span:
            swarm, task = self._task(
                capability, payload, swarm, priority=priority, timeout_s=timeout_s, max_retries=max_retries
            )
            if span is not None:
                span.set_attributes({"swarmray.swarm": swarm, "swarmray.task_id": task.id})
            return self._call(lambda: self.queen(swarm).submit.remote(task))

    def submit_many(
        self, capability: str, payloads: list[dict], *, swarm: str | None = None, **fields: Any
    ) -> list[str]:
        """Submits one task per payload in a single call to one queen; returns their ids."""
        with _submitting(capability, len(payloads)) as span:
            if swarm is None:
                swarm = self._call(lambda: self.registry.route.remote(capability, []))
            if span is not None:
                span.set_attribute("swarmray.swarm", swarm)
            tasks = [self._task(capability, p, swarm, **fields)[1] for p in payloads]
            return self._call(lambda: self.queen(swarm).submit_many.remote(tasks))

    def _queen_of(self, task_id: str) -> Any:
        """The queen that accepted `task_id` (its id starts with the swarm's name)."""
        swarm, sep, rest = task_id.partition(":")
        try:
            if sep and rest:
                return self.queen(swarm)
            known = list(self._call(self.registry.system_config.remote).get("swarms", {}))
        except SwarmNotFoundError as e:
            known = e.known
        raise TaskNotFoundError(task_id, None, known)

    def result(self, task_id: str, timeout_s: float | None = None) -> TaskResult:
        """The task's result, waiting up to `timeout_s` (None: until it ends)."""
        return self._call(lambda: self._queen_of(task_id).result.remote(task_id, timeout_s))

    def run(self, capability: str, payload: dict | None = None, **kwargs: Any) -> TaskResult:
        """Submits a task and waits for its result."""
        return self.result(self.submit(capability, payload, **kwargs))

    def cancel(self, task_id: str) -> bool:
        """Cancels a task that has not ended."""
        return self._call(lambda: self._queen_of(task_id).cancel.remote(task_id))

    def capabilities(self, name: str | None = None) -> list[dict[str, Any]]:
        """Each capability a swarm offers: swarm, pools, description and payload JSON Schema
        (None where its agent declares none); `name` keeps that capability, or, ending in a
        dot, that family ('memory.').

        Raises:
            UnknownCapabilityError: no swarm offers `name`.
        """
        swarms = [row["name"] for row in self._call(self.registry.table.remote)]
        entries = [e for s in swarms for e in self._call(lambda s=s: self.queen(s).catalog.remote())]
        if name is None:
            return entries
        found = [
            e
            for e in entries
            if e["capability"] == name or (name.endswith(".") and e["capability"].startswith(name))
        ]
        if not found:
            raise UnknownCapabilityError(name, sorted({e["capability"] for e in entries}))
        return found

    def status(self) -> dict[str, Any]:
        """The system's status (see `status`)."""
        return status(self.namespace)

    def usage(self, by: str = "swarm", since: float | None = None) -> list[dict[str, Any]]:
        """Tokens and cost spent through the AI service, one row per swarm and capability
        (`by="swarm"`), key or model, since a Unix time; the last row is the total."""
        return usage(self.namespace, by, since)  # type: ignore[arg-type]


def _submitting(capability: str, count: int) -> AbstractContextManager[Any]:
    """The `swarm.submit` span of one submit call (its tasks carry it in `Task.trace`)."""
    if not tracing.enabled():
        return tracing.span("swarm.submit")  # the shared no-op
    attributes = {"swarmray.capability": capability, "swarmray.tasks": count}
    return tracing.span("swarm.submit", kind="producer", attributes=attributes)


def unwrap(result: TaskResult) -> Any:
    """The output of a succeeded task; raises the matching TaskError otherwise."""
    errors = {"failed": TaskFailedError, "timed_out": TaskTimeoutError, "cancelled": TaskCancelledError}
    if result.ok:
        return result.output
    cls = errors.get(result.status.value, TaskFailedError)
    raise cls(result.task_id, f"{result.status.value}: {result.error_type}: {result.error}")
