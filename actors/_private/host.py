"""AgentHost: the Ray actor that runs one or more agents of a pool."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray
from pydantic import ValidationError

from actors._private.agents.agent import AgentContext, call_maybe_async
from actors._private.agents.payload import check_payload, payload_error, payload_models
from actors._private.agents.tasks import TaskClient
from actors._private.config import AgentConfig
from actors._private.memory_store import MemoryClient
from actors._private.services import spending
from actors._private.task import Task
from models._private.core import tracing
from models._private.core.config import import_object
from models._private.core.usage import Spent

__all__ = ["AgentHost"]


class AgentHost:
    """Hosts `agent_ids` agents of one class in one process.

    With one agent per host the agent owns the actor's resources (a GPU, say); with many,
    light agents share one process and its event loop, which is how a node holds thousands.
    """

    def __init__(
        self,
        namespace: str,
        swarm: str,
        pool: str,
        agent: AgentConfig,
        agent_ids: list[str],
        states: dict[str, Any] | None = None,
        trace: tracing.TracingConfig | None = None,
    ):
        # In the constructor, from the queen: a failure is a failed start, which the pool
        # counts, and a host needs no call to the registry before it can answer `ready`.
        tracing.configure(trace, "swarmray.agents", namespace)
        # Threads for sync agents: as many as their tasks can run at once, which the queen
        # never exceeds, since it frees a slot only when the work in it has ended.
        self._threads = ThreadPoolExecutor(
            max_workers=len(agent_ids) * agent.max_concurrent_tasks, thread_name_prefix=f"{pool}-agent"
        )
        cls = import_object(agent.class_path)
        caps = tuple(agent.capability_names)
        self.payloads = payload_models([(agent.class_path, caps)])
        memory = MemoryClient(namespace, swarm)  # the system's namespace, not this job's
        tasks = TaskClient(namespace)
        self.agents = {}
        for agent_id in agent_ids:
            instance = cls(**agent.params)
            instance.context = AgentContext(agent_id, swarm, pool, caps, memory, tasks)
            if states and agent_id in states:
                instance.restore(states[agent_id])
            self.agents[agent_id] = instance

    async def ready(self) -> dict[str, Any]:
        """Answers once the agents are built: where the host runs."""
        inside = ray.is_initialized()  # a colocated host outside Ray (in-process tests) has no node
        return {
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id() if inside else None,
            "gpu_ids": ray.get_gpu_ids() if inside else [],
            "agents": list(self.agents),
        }

    async def ping(self) -> float:
        """Health probe: answers at once unless the process is stuck."""
        return time.time()

    async def handle(self, agent_id: str, task: Task) -> tuple[Any, Any, dict[str, int] | None]:
        """Runs `task` on agent `agent_id`; returns its output, the agent's checkpoint and what
        it spent through the AI service (None: nothing). An error raised carries what it spent
        as its `spent` attribute."""
        agent = self.agents[agent_id]
        if (model := self.payloads.get(task.capability)) is not None:
            payload = check_payload(model, task.capability, task.payload)
            task = task.model_copy(update={"payload": payload})
        with (
            spending() as spent,
            tracing.span("agent.handle", task.trace or {}, "consumer", _attrs(task, agent_id)),
        ):
            try:
                # In the span's context: a sync agent's thread gets a copy of it, and so its
                # calls to the services and its child tasks nest in the span.
                output = await call_maybe_async(agent.handle, task, executor=self._threads)
            except ValidationError as e:  # the input's fault, like a payload that does not fit
                error = payload_error(task.capability, e)
                _note_spent(error, spent)
                raise error from None
            except Exception as e:
                _note_spent(e, spent)
                raise
        return (
            _as_journaled(output, agent_id, "an output"),
            _as_journaled(agent.snapshot(), agent_id, "a checkpoint"),
            None if spent.empty else spent.model_dump(),
        )


def _attrs(task: Task, agent_id: str) -> dict[str, Any] | None:
    if not tracing.enabled():
        return None
    return {"swarmray.task_id": task.id, "swarmray.capability": task.capability, "swarmray.agent": agent_id}


def _note_spent(error: Exception, spent: Spent) -> None:
    # A failed attempt may have paid for answers already: the queen counts them too.
    if not spent.empty:
        try:
            error.spent = spent.model_dump()  # type: ignore[attr-defined]
        except AttributeError:  # an exception class with __slots__: its spend goes uncounted
            pass


def _as_journaled(value: Any, agent_id: str, what: str) -> Any:
    # The queen journals outputs and checkpoints as JSON: a value JSON cannot hold would come
    # back different after a restart, so it is refused here, and what passes is handed on as
    # replay will give it (tuples as lists, keys as strings).
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"agent {agent_id} returned {what} that is not JSON ({e}); return dicts, lists, "
            "strings, numbers, booleans and None"
        ) from None
