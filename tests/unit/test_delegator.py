import asyncio

import pytest
from ray.exceptions import RayActorError, RayTaskError

from actors import QueenConfig
from actors._private.queen.delegator import ActorPeers, Delegator
from actors._private.queen.task_book import TaskBook
from actors._private.task import Task, TaskResult, TaskStatus
from models import CircuitBreakerConfig
from models._private.core.errors import BackpressureError, DelegationError, DelegationLost, TaskNotFoundError
from tests.unit.fakes import FakePeers
from tests.waiting import async_wait_until


def run(coro):
    return asyncio.run(coro)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def delegator(peers, threshold=3, cooldown_s=10.0, max_hops=4, max_host_failures=2):
    slept: list[float] = []

    async def sleep(s):
        slept.append(s)

    clock = Clock()
    d = Delegator(
        "front",
        peers,
        max_hops,
        CircuitBreakerConfig(failure_threshold=threshold, cooldown_s=cooldown_s),
        QueenConfig(max_host_failures=max_host_failures, retry_backoff_s=0.1, max_retry_backoff_s=1.0),
        sleep=sleep,
        clock=clock,
    )
    return d, slept, clock


def delegated_record(to):
    rec = TaskBook("front", 10).accept(Task(capability="x", payload={"n": 1}), TaskStatus.DELEGATED)
    rec.delegated_to = to
    return rec


def not_found(swarm, task_id):
    """What Ray raises here when the remote queen's `result` raised TaskNotFoundError."""
    return RayTaskError("result", "traceback", TaskNotFoundError(task_id, swarm)).as_instanceof_cause()


def test_hand_over_submits_to_the_routed_swarm_and_returns_where_the_task_went():
    peers = FakePeers(["b", "c"])
    d, _, _ = delegator(peers)
    task = Task(id="front:1", capability="x", visited=["origin"], hops=1, attempt=2)
    assert run(d.hand_over(task)) == ("b", "b:1")
    assert peers.routed == [["origin", "front"]]  # never routed back to a swarm it passed
    (swarm, onward) = peers.submitted[0]
    assert swarm == "b" and onward.id == "" and onward.hops == 2 and onward.attempt == 0
    assert onward.visited == ["origin", "front"] and onward.origin_swarm == "front"
    assert task.hops == 1 and task.id == "front:1"  # the local task is left as it was


def test_hand_over_refuses_a_task_at_the_hop_limit_without_routing():
    peers = FakePeers(["b"])
    d, _, _ = delegator(peers, max_hops=2)
    with pytest.raises(DelegationError, match="hop limit 2 reached"):
        run(d.hand_over(Task(capability="x", hops=2)))
    assert peers.routed == []


def test_a_swarm_that_cannot_be_reached_is_skipped_for_the_next_one():
    peers = FakePeers(["b", "c"])
    peers.down.add("b")
    d, _, _ = delegator(peers)
    assert run(d.hand_over(Task(capability="x"))) == ("c", "c:2")
    assert peers.routed == [["front"], ["front", "b"]]
    assert d.breaker("b").failures == 1 and d.breaker_states() == {"b": "closed", "c": "closed"}


def test_a_breaker_opens_after_repeated_failures_and_its_swarm_is_no_longer_tried():
    peers = FakePeers(["b", "c"])
    peers.down.add("b")
    d, _, _ = delegator(peers, threshold=2)
    run(d.hand_over(Task(capability="x")))
    run(d.hand_over(Task(capability="x")))  # the second failure opens b's breaker
    assert d.breaker_states()["b"] == "open"
    tried = len(peers.submitted)
    assert run(d.hand_over(Task(capability="x")))[0] == "c"
    assert peers.routed[-1] == ["front", "b"]  # excluded up front
    assert [s for s, _ in peers.submitted[tried:]] == ["c"]


def test_an_open_breaker_lets_one_probe_through_after_its_cooldown_and_closes_on_success():
    peers = FakePeers(["b", "c"])
    peers.down.add("b")
    d, _, clock = delegator(peers, threshold=1, cooldown_s=5)
    run(d.hand_over(Task(capability="x")))
    assert d.breaker_states()["b"] == "open"
    peers.down.clear()  # b is back
    clock.t += 5
    assert run(d.hand_over(Task(capability="x")))[0] == "b"
    assert d.breaker_states()["b"] == "closed"


def test_follow_returns_the_result_where_the_task_runs():
    peers = FakePeers(["b"])
    d, slept, _ = delegator(peers)
    rec = delegated_record(("b", "b:1"))
    moved = []
    result = run(d.follow(rec, lambda r: _record(moved, r)))
    assert result.output == "b" and peers.polled == [("b", "b:1")]
    assert moved == [] and slept == [] and rec.host_failures == 0


async def _record(moved, rec):
    moved.append(rec.delegated_to)


def test_a_restarting_remote_queen_is_waited_for_within_max_host_failures():
    peers = FakePeers(["b", "c"])
    peers.outcomes["b"] = [RayActorError(), RayActorError()]
    d, slept, _ = delegator(peers, max_host_failures=2)
    rec = delegated_record(("b", "b:1"))
    moved = []
    result = run(d.follow(rec, lambda r: _record(moved, r)))
    assert result.swarm == "b" and peers.polled == [("b", "b:1")] * 3
    assert rec.host_failures == 2 and len(slept) == 2 and moved == []
    assert d.breaker("b").failures == 0  # the answer closed it again


def test_a_lost_remote_queen_is_retried_then_the_task_is_handed_over_elsewhere():
    peers = FakePeers(["b", "c"])
    peers.outcomes["b"] = [RayActorError()] * 3
    d, slept, _ = delegator(peers, max_host_failures=2)
    rec = delegated_record(("b", "b:1"))
    moved = []
    result = run(d.follow(rec, lambda r: _record(moved, r)))
    assert peers.polled == [("b", "b:1")] * 3 + [("c", "c:1")]
    assert rec.delegated_to == ("c", "c:1") and moved == [("c", "c:1")]  # journaled by the queen
    assert len(peers.routed) == 1 and "b" in peers.routed[0]  # the lost swarm is avoided
    assert result.swarm == "c" and rec.host_failures == 3 and len(slept) == 2


def test_a_task_its_swarm_no_longer_knows_is_handed_over_at_once():
    peers = FakePeers(["b", "c"])
    peers.outcomes["b"] = [not_found("b", "b:1")]
    d, slept, _ = delegator(peers)
    rec = delegated_record(("b", "b:1"))
    moved = []
    assert run(d.follow(rec, lambda r: _record(moved, r))).swarm == "c"
    assert moved == [("c", "c:1")] and slept == [] and rec.host_failures == 0


def test_a_lost_task_that_no_other_swarm_takes_fails_with_both_reasons():
    peers = FakePeers(["b"])
    peers.outcomes["b"] = [not_found("b", "b:1")]
    d, _, _ = delegator(peers)
    rec = delegated_record(("b", "b:1"))
    with pytest.raises(DelegationLost) as info:
        run(d.follow(rec, lambda r: _record([], r)))
    assert str(info.value).startswith("swarm 'b' no longer knows task b:1; cannot delegate capability 'x'")
    assert info.value.error_type == "DelegationError"
    assert rec.delegated_to == ("b", "b:1")


def test_any_other_remote_error_fails_the_followed_task_with_its_reason():
    # Not a lost task, so not handed over; but the follower must end the task, not die.
    peers = FakePeers(["b", "c"])
    peers.outcomes["b"] = [remote_error("result", ValueError("boom"))]
    d, _, _ = delegator(peers)
    with pytest.raises(DelegationLost) as info:
        run(d.follow(delegated_record(("b", "b:1")), lambda r: _record([], r)))
    assert str(info.value) == "swarm 'b' could not report task b:1: ValueError: boom"
    assert info.value.error_type == "ValueError"
    assert peers.submitted == []  # not handed over


def remote_error(method, cause):
    """What Ray raises here when the remote queen's `method` raised `cause`."""
    return RayTaskError(method, "traceback", cause).as_instanceof_cause()


def test_a_full_target_is_skipped_for_the_next_swarm():
    peers = FakePeers(["b", "c"])
    peers.refusals["b"] = remote_error("submit", BackpressureError("b", 10, 10))
    d, _, _ = delegator(peers)
    assert run(d.hand_over(Task(capability="x")))[0] == "c"
    assert d.breaker("b").failures == 0  # full is not down


def test_when_every_offering_swarm_is_full_the_hand_over_is_refused_as_full():
    peers = FakePeers(["b", "c"])
    for swarm in ("b", "c"):
        peers.refusals[swarm] = remote_error("submit", BackpressureError(swarm, 10, 10))
    d, _, _ = delegator(peers)
    with pytest.raises(BackpressureError):
        run(d.hand_over(Task(capability="x")))


def test_a_half_open_probe_refused_by_its_target_lets_the_next_call_probe():
    peers = FakePeers(["b"])
    peers.down.add("b")
    d, _, clock = delegator(peers, threshold=1, cooldown_s=5)
    with pytest.raises(DelegationError):
        run(d.hand_over(Task(capability="x")))  # b down: its breaker opens, nobody else
    peers.down.clear()
    clock.t += 5
    peers.refusals["b"] = remote_error("submit", DelegationError("x", "hop limit 3 reached", ["b"]))
    with pytest.raises(DelegationError, match="hop limit"):
        run(d.hand_over(Task(capability="x")))  # the probe: b answered, with a refusal
    assert d.breaker_states()["b"] == "half_open" and not d.breaker("b").probing
    del peers.refusals["b"]
    assert run(d.hand_over(Task(capability="x")))[0] == "b"  # a new probe goes through
    assert d.breaker_states()["b"] == "closed"


def test_a_half_open_probe_cancelled_mid_hand_over_lets_the_next_call_probe():
    peers = FakePeers(["b"])
    peers.down.add("b")
    d, _, clock = delegator(peers, threshold=1, cooldown_s=5)
    with pytest.raises(DelegationError):
        run(d.hand_over(Task(capability="x")))
    peers.down.clear()
    clock.t += 5
    gate = asyncio.Event()

    async def hanging_submit(swarm, task):
        await gate.wait()

    peers.submit = hanging_submit

    async def cancel_the_probe():
        probe = asyncio.create_task(d.hand_over(Task(capability="x")))
        await async_wait_until(lambda: d.breaker("b").probing)
        probe.cancel()
        await asyncio.gather(probe, return_exceptions=True)

    run(cancel_the_probe())
    assert not d.breaker("b").probing


def test_routing_rides_out_a_restarting_registry():
    peers = FakePeers(["b"])
    peers.route_errors = [RayActorError(), RayActorError()]
    d, slept, _ = delegator(peers, max_host_failures=3)
    assert run(d.hand_over(Task(capability="x"))) == ("b", "b:1")
    assert len(slept) == 2


def test_a_registry_that_stays_away_fails_the_hand_over_with_a_reason():
    peers = FakePeers(["b"])
    peers.route_errors = [RayActorError()] * 10
    d, _, _ = delegator(peers, max_host_failures=2)
    with pytest.raises(DelegationError, match="the registry did not answer"):
        run(d.hand_over(Task(capability="x")))


def test_a_follow_that_succeeds_after_its_swarm_s_breaker_opened_leaves_it_open():
    peers = FakePeers(["b"])
    d, _, clock = delegator(peers, threshold=1, cooldown_s=60)
    rec = delegated_record(("b", "b:1"))
    asked, gate = [], asyncio.Event()
    answer = peers.result

    async def slow_result(swarm, task_id):
        asked.append(task_id)
        await gate.wait()
        return await answer(swarm, task_id)

    peers.result = slow_result

    async def scenario():
        follower = asyncio.create_task(d.follow(rec, lambda r: _record([], r)))
        await async_wait_until(lambda: asked)
        clock.t += 1
        d.breaker("b").failure()  # another call to b failed meanwhile: open
        gate.set()
        return await follower

    assert run(scenario()).swarm == "b"
    assert d.breaker_states()["b"] == "open"


def test_reroute_gives_none_when_no_other_swarm_offers_the_capability():
    d, _, _ = delegator(FakePeers([]))
    assert run(d.reroute(Task(capability="x"))) is None


def test_cancel_reaches_the_remote_queen_and_lets_a_down_one_be():
    peers = FakePeers(["b"])
    d, _, _ = delegator(peers)
    run(d.cancel(("b", "b:4")))
    assert peers.cancelled == [("b", "b:4")]
    peers.down.add("b")
    run(d.cancel(("b", "b:5")))  # no error: the local record is cancelled either way


class _Method:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        return self.fn(*args)


class _Handle:
    def __init__(self, swarm, down):
        async def accept_many(tasks):
            if down:
                raise RayActorError()
            return [f"{swarm}:{i}" for i, _ in enumerate(tasks, 1)]

        self.accept_many = _Method(accept_many)


def test_actor_peers_forget_the_handle_of_a_queen_that_failed_a_call():
    handles = {"queen:b": _Handle("b", down=True), "queen:c": _Handle("c", down=False)}
    forgotten = []
    peers = ActorPeers(handles.__getitem__, forgotten.append)
    assert run(peers.submit("c", Task(capability="x"))) == "c:1"
    with pytest.raises(RayActorError):
        run(peers.submit("b", Task(capability="x")))
    assert forgotten == ["queen:b"]


class Swarms:
    """The registry and queens as `ActorPeers` calls them, counting each call by method: the
    registry routes `capability` to the first of `offering` not excluded (cacheable unless
    told otherwise); each queen accepts every task and ends it at once."""

    def __init__(self, offering, cacheable=True):
        self.offering = list(offering)
        self.cacheable = cacheable
        self.generation = 1
        self.calls: list[tuple[str, str, int]] = []  # (actor, method, items in the call)
        self.refuse: dict[str, BaseException] = {}

    def __call__(self, name):
        swarms = self

        class Handle:
            def __getattr__(self, method):
                async def call(*args):
                    await asyncio.sleep(0)  # a round trip: callers made meanwhile wait for the next
                    return getattr(swarms, method)(name, *args)

                return _Method(call)

        return Handle()

    def routing(self, name, capability, exclude, count):
        self.calls.append((name, "routing", count))
        swarm = next(s for s in self.offering if s not in exclude)
        swarms = [swarm] * count
        return {"swarm": swarm, "swarms": swarms, "generation": self.generation, "cacheable": self.cacheable}

    def accept_many(self, name, tasks):
        self.calls.append((name, "accept_many", len(tasks)))
        swarm = name.split(":", 1)[1]
        if isinstance(self.refuse.get(swarm), RayActorError):
            raise self.refuse[swarm]  # its queen is down: the whole call fails
        return [self.refuse.get(swarm) or f"{swarm}:{t.payload['n']}" for t in tasks]

    def results_many(self, name, task_ids, wait_s):
        self.calls.append((name, "results_many", len(task_ids)))
        swarm = name.split(":", 1)[1]
        return [
            TaskResult(task_id=i, capability="x", status=TaskStatus.SUCCEEDED, output=i, swarm=swarm)
            for i in task_ids
        ]

    def count(self, method):
        return [n for _, m, n in self.calls if m == method]


def swarm_delegator(swarms, **kw):
    peers = ActorPeers(swarms, lambda name: None, **kw)
    d, _, clock = delegator(peers)
    return d, peers, clock


def tasks(n):
    return [Task(capability="x", payload={"n": i}) for i in range(n)]


def test_tasks_handed_over_together_cost_one_route_one_hand_over_and_one_follow():
    swarms = Swarms(["b"])
    d, _, _ = swarm_delegator(swarms)

    async def scenario():
        where = await asyncio.gather(*(d.hand_over(t) for t in tasks(50)))
        recs = []
        for target in where:
            rec = delegated_record(target)
            recs.append(rec)
        results = await asyncio.gather(*(d.follow(r, _record) for r in recs))
        return where, results

    where, results = run(scenario())
    assert where == [("b", f"b:{i}") for i in range(50)]
    assert [r.output for r in results] == [f"b:{i}" for i in range(50)]
    assert swarms.count("routing") == [50]  # the registry counts all 50 as routed there
    assert swarms.count("accept_many") == [50]
    assert swarms.count("results_many") == [50]


def test_hand_overs_made_while_one_is_in_flight_go_together_in_the_next_call():
    swarms = Swarms(["b"])
    d, _, _ = swarm_delegator(swarms)

    async def scenario():
        first = [asyncio.ensure_future(d.hand_over(t)) for t in tasks(3)]
        for _ in range(3):  # the first calls are out: two at most to one swarm
            await asyncio.sleep(0)
        later = [asyncio.ensure_future(d.hand_over(t)) for t in tasks(30)]
        return await asyncio.gather(*first, *later)

    assert len(run(scenario())) == 33
    assert sum(swarms.count("accept_many")) == 33
    assert len(swarms.count("accept_many")) <= 3


def test_a_cacheable_route_is_reused_until_the_registry_generation_moves_on():
    swarms = Swarms(["b", "c"])
    d, peers, _ = swarm_delegator(swarms)
    assert run(d.hand_over(Task(capability="x", payload={"n": 1}))) == ("b", "b:1")
    assert run(d.hand_over(Task(capability="x", payload={"n": 2}))) == ("b", "b:2")
    assert swarms.count("routing") == [1]
    # b leaves: the registry pushes its new generation, and the next task goes where it says.
    swarms.offering, swarms.generation = ["c"], 2
    peers.routes_changed(2)
    assert run(d.hand_over(Task(capability="x", payload={"n": 3}))) == ("c", "c:3")
    assert swarms.count("routing") == [1, 1]


def test_a_cached_route_expires_after_its_ttl():
    swarms = Swarms(["b", "c"])
    clock = Clock()
    peers = ActorPeers(swarms, lambda name: None, route_cache_ttl_s=2.0, clock=clock)
    run(peers.route("x", []))
    run(peers.route("x", []))
    clock.t += 2.5
    run(peers.route("x", []))
    assert swarms.count("routing") == [1, 1]


def test_a_route_the_registry_marks_load_dependent_is_never_cached():
    swarms = Swarms(["b"], cacheable=False)
    d, _, _ = swarm_delegator(swarms)
    run(d.hand_over(Task(capability="x", payload={"n": 1})))
    run(d.hand_over(Task(capability="x", payload={"n": 2})))
    assert swarms.count("routing") == [1, 1]


def test_a_target_that_refuses_drops_its_cached_route_and_the_task_goes_elsewhere():
    swarms = Swarms(["b", "c"])
    d, peers, _ = swarm_delegator(swarms)
    run(d.hand_over(Task(capability="x", payload={"n": 1})))
    swarms.refuse["b"] = BackpressureError("b", 10, 10)
    assert run(d.hand_over(Task(capability="x", payload={"n": 2}))) == ("c", "c:2")
    assert not any(swarm == "b" for swarm, _, _ in peers.routes.values())


def test_a_target_down_for_a_whole_batch_reroutes_every_task_of_it():
    swarms = Swarms(["b", "c"])
    d, _, _ = swarm_delegator(swarms)
    swarms.refuse["b"] = RayActorError()

    async def scenario():
        return await asyncio.gather(*(d.hand_over(t) for t in tasks(20)))

    where = run(scenario())
    assert {s for s, _ in where} == {"c"}
    assert swarms.count("accept_many") == [20, 20]  # one failed call for b, one call to c
    assert len({rid for _, rid in where}) == 20


def test_a_burst_of_hand_overs_is_spread_over_equally_loaded_swarms():
    """The tasks of one turn are routed in one call; the real registry spreads them as it
    would route them one by one, and each target gets its share in one hand-over."""
    from actors import RegistryConfig
    from actors._private.registry import MetaRegistry

    registry = MetaRegistry(RegistryConfig(stale_after_s=60))
    for name in ("b", "c"):
        registration = {"name": name, "capabilities": ["x"], "priority": 0, "description": ""}
        registry.heartbeat(registration, {"queued": 0, "running": 0, "slots": 1}, "healthy")

    class RegistrySwarms(Swarms):
        def routing(self, name, capability, exclude, count):
            self.calls.append((name, "routing", count))
            return registry.routing(capability, exclude, count)

    swarms = RegistrySwarms(["b", "c"])
    d, _, _ = swarm_delegator(swarms)

    async def scenario():
        return await asyncio.gather(*(d.hand_over(t) for t in tasks(10)))

    where = run(scenario())
    assert sorted(s for s, _ in where) == ["b"] * 5 + ["c"] * 5
    assert swarms.count("routing") == [10] and sorted(swarms.count("accept_many")) == [5, 5]
