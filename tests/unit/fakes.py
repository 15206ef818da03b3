"""Fakes of what lies outside a queen's process, for tests that drive its policy in-process."""

from __future__ import annotations

from ray.exceptions import RayActorError

from actors._private.task import Task, TaskResult, TaskStatus
from models._private.core.errors import DelegationError

__all__ = ["FakePeers"]


class FakePeers:
    """Swarms that offer the capability, in routing order; each may be down or forget tasks."""

    def __init__(self, offering):
        self.offering = list(offering)
        self.down: set[str] = set()
        self.routed: list[list[str]] = []  # the exclude list of each route call
        self.submitted: list[tuple[str, Task]] = []
        self.polled: list[tuple[str, str]] = []
        self.outcomes: dict[str, list[BaseException]] = {}  # swarm -> errors its `result` raises first
        self.cancelled: list[tuple[str, str]] = []
        self.refusals: dict[str, BaseException] = {}  # swarm -> what its queen's submit raises
        self.route_errors: list[BaseException] = []  # raised by the next route calls (registry down)

    async def route(self, capability, exclude):
        self.routed.append(list(exclude))
        if self.route_errors:
            raise self.route_errors.pop(0)
        for swarm in self.offering:
            if swarm not in exclude:
                return swarm
        raise DelegationError(capability, "no routable swarm offers it", list(exclude))

    async def submit(self, swarm, task):
        self.submitted.append((swarm, task))
        if swarm in self.down:
            raise RayActorError()
        if swarm in self.refusals:
            raise self.refusals[swarm]
        return f"{swarm}:{len(self.submitted)}"

    async def result(self, swarm, task_id):
        self.polled.append((swarm, task_id))
        if self.outcomes.get(swarm):
            raise self.outcomes[swarm].pop(0)
        return TaskResult(
            task_id=task_id,
            capability="x",
            status=TaskStatus.SUCCEEDED,
            output=swarm,
            swarm=swarm,
            attempts=1,
        )

    async def cancel(self, swarm, task_id):
        if swarm in self.down:
            raise RayActorError()
        self.cancelled.append((swarm, task_id))
        return True
