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
from models._private.core import names, tracing
from models._private.core.breaker import OPEN, CircuitBreaker, CircuitBreakerConfig
from models._private.core.errors import (
    BackpressureError,
    DelegationError,
    DelegationLost,
    SwarmrayError,
    TaskNotFoundError,
)
from models._private.core.retry import TRANSIENT, backoff_s, unwrap_error

__all__ = ["ActorPeers", "Batcher", "Delegator", "Peers"]


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


class Batcher:
    """Gathers the calls made for one key in one turn of the event loop, and those made while
    `max_inflight` calls for that key are out, into one call for many (as a journal's group
    commit gathers writers).

    `send(key, items)` returns one outcome per item, in order: a value, or an exception that
    only that item's caller gets; an exception `send` raises goes to every caller of the call.
    """

    def __init__(
        self,
        send: Callable[[Any, list[Any]], Awaitable[list[Any]]],
        max_inflight: int | None = None,
        max_items: int = 1000,
    ):
        self.send = send
        self.max_inflight = max_inflight
        self.max_items = max_items
        self.calls = 0  # calls made, for tests and metrics
        self._pending: dict[Any, list[tuple[Any, asyncio.Future]]] = {}
        self._scheduled: set[Any] = set()
        self._inflight: dict[Any, int] = {}
        self._sending: set[asyncio.Task] = set()

    async def __call__(self, key: Any, item: Any) -> Any:
        """The outcome of `item`'s part of the call made for `key`."""
        future = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append((item, future))
        self._schedule(key)
        return await future

    def _schedule(self, key: Any) -> None:
        if key in self._scheduled or not self._pending.get(key):
            return
        if self.max_inflight is not None and self._inflight.get(key, 0) >= self.max_inflight:
            return  # the call that ends first sends these
        self._scheduled.add(key)
        asyncio.get_running_loop().call_soon(self._flush, key)

    def _flush(self, key: Any) -> None:
        self._scheduled.discard(key)
        pending = self._pending.pop(key, [])
        batch = [(item, f) for item, f in pending if not f.done()]  # a caller that left drops out
        if len(batch) > self.max_items:
            batch, self._pending[key] = batch[: self.max_items], batch[self.max_items :]
        if not batch:
            return
        self._inflight[key] = self._inflight.get(key, 0) + 1
        self.calls += 1
        task = asyncio.get_running_loop().create_task(self._send(key, batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        self._schedule(key)  # the rest past max_items

    async def _send(self, key: Any, batch: list[tuple[Any, asyncio.Future]]) -> None:
        try:
            outcomes = await self.send(key, [item for item, _ in batch])
        except BaseException as e:
            for _, f in batch:
                if not f.done():
                    f.set_exception(e)
            if not isinstance(e, Exception):
                raise
        else:
            for (_, f), outcome in zip(batch, outcomes, strict=True):
                if f.done():
                    continue
                if isinstance(outcome, BaseException):
                    f.set_exception(outcome)
                else:
                    f.set_result(outcome)
        finally:
            self._inflight[key] -= 1
            self._schedule(key)


class ActorPeers:
    """`Peers` over Ray actor handles, looked up (and cached) by the queen's `actor(name)`.

    Calls made together are made as one: hand-overs to one swarm go in one `accept_many` call
    (at most `SUBMITS_INFLIGHT` out per swarm; those made meanwhile go in the next), results
    followed at one swarm in one `results_many` call, and routes asked for one capability in
    one `routing` call. A route the registry marks cacheable is kept until the registry's
    generation moves on (`routes_changed`), `route_cache_ttl_s` passes, or a hand-over to its
    swarm fails or is refused.
    """

    SUBMITS_INFLIGHT = 2  # two, so that one batch travels while the target journals the other
    RESULTS_WAIT_S = 30.0  # longest one `results_many` call waits for a first result

    def __init__(
        self,
        actor: Callable[[str], Any],
        forget: Callable[[str], None],
        route_cache_ttl_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.actor = actor
        self.forget = forget  # drops a cached handle
        self.route_cache_ttl_s = route_cache_ttl_s
        self.clock = clock
        self.generation = 0  # the newest registry generation heard of
        self.routes: dict[tuple[str, tuple[str, ...]], tuple[str, int, float]] = {}
        self.routings = Batcher(self._routing)
        self.submits = Batcher(self._accept_many, max_inflight=self.SUBMITS_INFLIGHT)
        self.results = Batcher(self._results_many)

    def routes_changed(self, generation: int) -> None:
        """The registry's routing moved to `generation`: every cached route older is dropped."""
        if generation > self.generation:
            self.generation = generation
            self.routes = {k: v for k, v in self.routes.items() if v[1] >= generation}

    def drop_routes_to(self, swarm: str) -> None:
        """Forgets every cached route to `swarm` (a hand-over there failed or was refused)."""
        self.routes = {k: v for k, v in self.routes.items() if v[0] != swarm}

    async def route(self, capability: str, exclude: list[str]) -> str:
        """See `Peers.route`."""
        key = (capability, tuple(sorted(set(exclude))))
        cached = self.routes.get(key)
        if cached is not None and cached[1] >= self.generation and cached[2] > self.clock():
            return cached[0]
        return await self.routings(key, None)

    async def _routing(self, key: tuple[str, tuple[str, ...]], items: list[None]) -> list[str]:
        capability, exclude = key
        got = await self.actor(names.REGISTRY).routing.remote(capability, list(exclude), len(items))
        self.generation = max(self.generation, got["generation"])
        if got["cacheable"] and got["generation"] >= self.generation:
            self.routes[key] = (got["swarm"], got["generation"], self.clock() + self.route_cache_ttl_s)
        return got["swarms"]  # one per task, spread as routes asked one by one would be

    async def submit(self, swarm: str, task: Task) -> str:
        """See `Peers.submit`; a refusal of the task drops the routes cached to `swarm`."""
        try:
            return await self.submits(swarm, task)
        except Exception:
            self.drop_routes_to(swarm)
            raise

    async def _accept_many(self, swarm: str, tasks: list[Task]) -> list[Any]:
        return await self._call(swarm, "accept_many", tasks)

    async def result(self, swarm: str, task_id: str) -> TaskResult:
        """See `Peers.result`."""
        while (found := await self.results(swarm, task_id)) is None:
            pass  # not final within the call's wait: asked again, with the others then waiting
        return found

    async def _results_many(self, swarm: str, task_ids: list[str]) -> list[Any]:
        return await self._call(swarm, "results_many", task_ids, self.RESULTS_WAIT_S)

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
        if not tracing.enabled():
            return await self._hand_over(task, visited, avoid)
        attributes = {"swarmray.swarm": self.swarm, "swarmray.task_id": task.id, "swarmray.hops": task.hops}
        with tracing.span("queen.delegate", task.trace or {}, "producer", attributes=attributes) as span:
            target, remote_id = await self._hand_over(task, visited, avoid)
            span.set_attributes({"swarmray.target": target, "swarmray.target_task_id": remote_id})
            return target, remote_id

    async def _hand_over(self, task: Task, visited: list[str], avoid: tuple[str, ...]) -> tuple[str, str]:
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
                    # The next queen's accept nests under this hand-over.
                    "trace": tracing.carrier() or task.trace,
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
