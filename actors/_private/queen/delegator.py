"""Delegator: hands tasks over to other swarms and follows their results there.

A task whose capability this swarm lacks (or that it cannot run while it has failed) goes to
the swarm the registry routes it to; that swarm's queen accepts it, and this queen follows the
result there. The policy lives here: the hop limit, a circuit breaker per target swarm, riding
out a target queen's restarts, and handing a task over again when its swarm lost it. Every call
out of the process goes through `Peers`, so tests drive the policy with plain async fakes;
the queen passes `ActorPeers`, which makes the Ray calls.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from actors._private.config import QueenConfig
from actors._private.queen.task_book import TaskRecord
from actors._private.task import Task, TaskResult
from models._private.core import names
from models._private.core.breaker import OPEN, CircuitBreaker, CircuitBreakerConfig
from models._private.core.errors import (
    BackpressureError,
    DelegationError,
    DelegationLost,
    SwarmrayError,
    TaskNotFoundError,
)
from models._private.core.retry import TRANSIENT, backoff_s, unwrap_error

__all__ = ["ActorPeers", "Delegator", "Peers"]


class Peers(Protocol):
    """The registry and the other swarms' queens, as the delegator calls them.

    A call to a queen that is gone or restarting raises one of `retry.TRANSIENT`; errors the
    callee raised come back as Ray raises them (`retry.unwrap_error` finds the cause).
    """

    async def route(self, capability: str, exclude: list[str]) -> str:
        """The swarm to hand a task for `capability` to, none of `exclude`."""
        ...

    async def submit(self, swarm: str, task: Task) -> str:
        """Has `swarm`'s queen accept `task`; returns the task's id there."""
        ...

    async def result(self, swarm: str, task_id: str) -> TaskResult:
        """Waits without limit for the task's final result at `swarm`."""
        ...

    async def cancel(self, swarm: str, task_id: str) -> bool:
        """Cancels the task at `swarm`."""
        ...


class ActorPeers:
    """`Peers` over Ray actor handles, looked up (and cached) by the queen's `actor(name)`."""

    def __init__(self, actor: Callable[[str], Any], forget: Callable[[str], None]):
        self.actor = actor
        self.forget = forget  # drops a cached handle

    async def route(self, capability: str, exclude: list[str]) -> str:
        """See `Peers.route`."""
        return await self.actor(names.REGISTRY).route.remote(capability, exclude)

    async def submit(self, swarm: str, task: Task) -> str:
        """See `Peers.submit`."""
        return await self._call(swarm, "submit", task)

    async def result(self, swarm: str, task_id: str) -> TaskResult:
        """See `Peers.result`."""
        return await self._call(swarm, "result", task_id, None)

    async def cancel(self, swarm: str, task_id: str) -> bool:
        """See `Peers.cancel`."""
        return await self.actor(names.queen(swarm)).cancel.remote(task_id)

    async def _call(self, swarm: str, method: str, *args: Any) -> Any:
        name = names.queen(swarm)
        try:
            return await getattr(self.actor(name), method).remote(*args)
        except TRANSIENT:
            self.forget(name)  # a queen made anew has a new handle
            raise


class Delegator:
    """Hands one swarm's tasks to other swarms and follows them there.

    Args:
        swarm: This swarm's name; tasks handed over record it as visited.
        peers: How the registry and other queens are called.
        max_hops: How many times one task may be handed on between swarms.
        breaker: The configuration of each target swarm's circuit breaker.
        policy: `max_host_failures` and the retry backoff, for riding out a queen's restarts.
        sleep: Waits between those retries (tests pass a fake).
        clock: The breakers' clock (tests pass a fake).
    """

    def __init__(
        self,
        swarm: str,
        peers: Peers,
        max_hops: int,
        breaker: CircuitBreakerConfig,
        policy: QueenConfig,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.swarm = swarm
        self.peers = peers
        self.max_hops = max_hops
        self.breaker_config = breaker
        self.policy = policy
        self.sleep = sleep
        self.clock = clock
        self.breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, swarm: str) -> CircuitBreaker:
        """The breaker guarding hand-overs to `swarm`, made on first use."""
        if swarm not in self.breakers:
            self.breakers[swarm] = CircuitBreaker(self.breaker_config, self.clock)
        return self.breakers[swarm]

    def breaker_states(self) -> dict[str, str]:
        """Each target swarm's breaker state, by swarm name."""
        return {s: b.state for s, b in sorted(self.breakers.items())}

    async def hand_over(self, task: Task, avoid: tuple[str, ...] = ()) -> tuple[str, str]:
        """Routes a task to another swarm, which accepts it; skips swarms whose breaker is open
        and swarms whose queue is full.

        Returns:
            (swarm, task id there).

        Raises:
            DelegationError: the hop limit is reached, every offering swarm was skipped, the
                registry did not answer, or the target refused the task for its hop limit.
            BackpressureError: every offering swarm that could be reached is full.
            UnknownCapabilityError: no swarm offers the task's capability.
        """
        visited = [*task.visited, self.swarm]
        if task.hops >= self.max_hops:
            raise DelegationError(task.capability, f"hop limit {self.max_hops} reached", visited)
        skip = [*avoid, *(s for s, b in self.breakers.items() if b.state == OPEN)]
        full: BackpressureError | None = None
        while True:
            try:
                target = await self._route(task.capability, visited + skip)
            except DelegationError:
                if full is not None:
                    raise full from None  # nobody else: the caller should back off
                raise
            breaker = self.breaker(target)
            if not breaker.allow():
                skip.append(target)  # open, or half-open with its one probe already out
                continue
            onward = task.model_copy(
                update={
                    "id": "",
                    "hops": task.hops + 1,
                    "visited": visited,
                    "attempt": 0,
                    "origin_swarm": task.origin_swarm or self.swarm,
                }
            )
            try:
                remote_id = await self.peers.submit(target, onward)
            except TRANSIENT:
                breaker.failure()
                skip.append(target)
                continue
            except BaseException as e:
                # The target answered (or the caller left): no verdict on its health, but a
                # half-open breaker must be free to probe again.
                breaker.abandon()
                if isinstance(cause := unwrap_error(e), BackpressureError):
                    full = cause
                    skip.append(target)
                    continue
                if isinstance(cause, SwarmrayError):
                    raise cause from None  # e.g. its hop limit: the caller's answer, as it is
                raise
            breaker.success()
            return target, remote_id

    async def _route(self, capability: str, exclude: list[str]) -> str:
        """`peers.route`, riding out a registry that is restarting (within max_host_failures)."""
        policy = self.policy
        for failures in itertools.count(1):
            try:
                return await self.peers.route(capability, exclude)
            except TRANSIENT as e:
                if failures > policy.max_host_failures:
                    why = f"the registry did not answer: {type(e).__name__}"
                    raise DelegationError(capability, why, exclude) from e
                await self.sleep(backoff_s(failures, policy.retry_backoff_s, policy.max_retry_backoff_s))
        raise AssertionError("unreachable")

    async def reroute(self, task: Task) -> tuple[str, str] | None:
        """Hands over a task this swarm cannot run for now; None if no other swarm takes it."""
        try:
            return await self.hand_over(task)
        except SwarmrayError:
            return None

    async def follow(self, rec: TaskRecord, moved: Callable[[TaskRecord], Awaitable[None]]) -> TaskResult:
        """Waits for a delegated task's result where it runs, riding out that queen's restarts.

        A target queen that cannot be reached counts against the task's `max_host_failures`
        and is tried again after a backoff; past that, or when the target no longer knows the
        task (its journal is gone), the task is handed over to another swarm (at-least-once
        execution allows running it again), `rec.delegated_to` is updated and `moved(rec)`
        awaited before following on.

        Returns:
            The task's final result at the swarm that ran it.

        Raises:
            DelegationLost: the task had to move and no other swarm took it.
        """
        policy = self.policy
        while True:
            swarm, remote_id = rec.delegated_to
            since = self.clock()
            try:
                remote = await self.peers.result(swarm, remote_id)
                self.breaker(swarm).success(since)
                return remote
            except TRANSIENT as e:
                self.breaker(swarm).failure()
                rec.host_failures += 1
                if rec.host_failures <= policy.max_host_failures:
                    await self.sleep(
                        backoff_s(rec.host_failures, policy.retry_backoff_s, policy.max_retry_backoff_s)
                    )
                    continue
                reason = f"swarm {swarm!r} was lost: {type(e).__name__}"
            except Exception as e:  # through Ray: a RayTaskError whose cause the callee raised
                cause = unwrap_error(e)
                if not isinstance(cause, TaskNotFoundError):
                    # Not lost, so not handed over: the task ends here with the reason.
                    reason = f"swarm {swarm!r} could not report task {remote_id}"
                    raise DelegationLost(reason, cause) from e
                reason = f"swarm {swarm!r} no longer knows task {remote_id}"
            try:
                rec.delegated_to = await self.hand_over(rec.task, avoid=(swarm,))
            except SwarmrayError as e:
                raise DelegationLost(reason, e) from e
            await moved(rec)

    async def cancel(self, delegated_to: tuple[str, str]) -> None:
        """Asks the swarm a task was handed to to cancel it; a queen that is down is let be."""
        swarm, remote_id = delegated_to
        try:
            await self.peers.cancel(swarm, remote_id)
        except TRANSIENT:
            pass  # the local record is cancelled either way
