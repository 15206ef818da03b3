"""The queen's policy in one process: colocated agents, a real journal on disk, and fakes for
the registry and the other swarms (the cluster tests run the same code as Ray actors)."""

import asyncio
import os
import time

import pytest

from actors import RegistryConfig, SwarmConfig, Task, TaskStatus
from actors._private.queen.queen import SwarmQueen
from models._private.core.errors import DelegationError, SchedulingError
from models._private.core.journal import Journal, journal_location
from tests.unit.fakes import FakePeers
from tests.unit.test_journal import FlakyDisk
from tests.waiting import async_wait_until


class FakeRegistry:
    """The registry as a queen calls it: `.method.remote(...)`, answered at once."""

    def __init__(self):
        self.marks = []

    def __getattr__(self, method):
        registry = self

        class Method:
            def remote(self, *args):
                if method == "mark":
                    registry.marks.append(args)
                fut = asyncio.get_running_loop().create_future()
                fut.set_result(None)
                return fut

        return Method()


def pool(agent, **kw):
    return {"agent": {"class": agent}, "colocate": True, "min_agents": 1, "max_agents": 1, **kw}


def make_queen(tmp_path, pools, peers=None, **swarm):
    config = SwarmConfig.model_validate(
        {"name": "front", "pools": pools, "journal": {"uri": str(tmp_path)}, **swarm}
    )
    queen = SwarmQueen("ns", config, RegistryConfig())
    queen.delegator.peers = peers or FakePeers([])
    registry = FakeRegistry()
    queen._actor = lambda name: registry
    queen.registry = registry
    return queen


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


SLEEP = "tests.agents:SleepAgent"


class SlowPeers(FakePeers):
    """Other swarms whose queens take a round trip to accept a task."""

    async def submit(self, swarm, task):
        await asyncio.sleep(0.05)
        return await super().submit(swarm, task)


def test_two_submits_of_one_task_id_delegate_it_once(tmp_path):
    peers = SlowPeers(["b"])
    queen = make_queen(tmp_path, {"s": pool(SLEEP)}, peers)

    async def scenario():
        task = {"id": "front:1", "capability": "remote.cap"}
        return await asyncio.gather(queen.submit(task), queen.submit(task))

    assert run(scenario()) == ["front:1", "front:1"]
    assert len(peers.submitted) == 1


def test_a_retried_submit_is_acknowledged_only_once_the_task_is_durable(tmp_path, monkeypatch):
    real_write = os.write

    def slow_write(fd, data):  # a disk that takes 0.2 s to take a batch
        time.sleep(0.2)
        return real_write(fd, data)

    monkeypatch.setattr("models._private.core.journal.os.write", slow_write)
    queen = make_queen(tmp_path, {"s": pool(SLEEP)}, SlowPeers(["b"]))

    async def scenario():
        task = {"id": "front:1", "capability": "remote.cap"}
        first = asyncio.create_task(queen.submit(task))
        await async_wait_until(lambda: "front:1" in queen._admitting)
        assert await queen.submit(task) == "front:1"  # acknowledged: must be on disk now
        on_disk = Journal(journal_location(str(tmp_path), "ns", "front")).read()
        await first
        return [r["task"]["id"] for r in on_disk if r["k"] == "acc"]

    assert run(scenario()) == ["front:1"]


def test_a_result_whose_journal_write_failed_is_written_again_and_returned(tmp_path, monkeypatch):
    disk = FlakyDisk()
    monkeypatch.setattr("models._private.core.journal.os.write", disk)
    queen = make_queen(tmp_path, {"s": pool(SLEEP)})

    async def scenario():
        task_id = await queen.submit({"capability": "test.sleep", "payload": {"s": 0.3}})
        await async_wait_until(lambda: queen.book.get(task_id).result.status is TaskStatus.RUNNING)
        await queen.journal.flush()  # the attempt's record is written
        disk.fail_next = True  # the next write carries the result: the disk is full
        return await queen.result(task_id, timeout_s=10)

    result = run(scenario())
    assert result.status is TaskStatus.SUCCEEDED and queen.status()["journal"]["errors"] == 1
    assert not disk.fail_next  # the failure did happen
    queen.journal.close()
    replayed = make_queen(tmp_path, {"s": pool(SLEEP)})
    replayed._ensure_started = lambda: None
    replayed.book.replay(replayed.journal.read(), {"test.sleep"})
    assert replayed.book.get(result.task_id).result.status is TaskStatus.SUCCEEDED


def test_a_pool_whose_constructor_fails_leaves_the_swarm_and_its_other_pools_serving(tmp_path):
    queen = make_queen(
        tmp_path,
        {"good": pool(SLEEP), "bad": pool("tests.agents:BrokenAgent")},
        supervision={"max_restarts": 2, "period_s": 60, "recover_after_s": 0.5},
    )

    async def scenario():
        await queen.start()
        bad = queen.pools["bad"]
        # Three failed starts, 1 and 2 s apart: as many as max_restarts + 1, which escalated
        # the swarm when start failures counted as its children's.
        await async_wait_until(lambda: bad.gave_up, timeout_s=20, what="the broken pool to give up")
        for _ in range(3):
            assert (await queen.run(Task(capability="test.sleep"), timeout_s=10)).ok
        return queen.status()

    status = run(scenario())
    assert status["supervision"]["state"] == "running" and queen.registry.marks == []
    rows = {r["pool"]: r for r in status["agents"]}
    assert rows["good"]["state"] == "alive"
    assert (
        rows["bad"]["state"] == "dead"
        and "RuntimeError: no weights at /models/missing" in rows["bad"]["reason"]
    )


def test_a_timed_out_sync_attempt_holds_its_agent_until_its_thread_ends(tmp_path):
    from tests.agents import BlockingAgent

    BlockingAgent.running = BlockingAgent.most = 0
    queen = make_queen(
        tmp_path,
        {"b": pool("tests.agents:BlockingAgent")},
        queen={"max_retries": 0, "default_timeout_s": 0.2},
    )

    async def scenario():
        slow = await queen.submit({"capability": "test.block", "payload": {"s": 1.0}})
        quick = await queen.submit({"capability": "test.block", "payload": {"s": 0}})
        return await queen.result(slow, 10), await queen.result(quick, 10)

    slow, quick = run(scenario())
    assert slow.status is TaskStatus.TIMED_OUT and quick.ok
    # The agent runs one task at a time (max_concurrent_tasks 1): the second waited for the
    # first one's thread, although its attempt had timed out long before.
    assert BlockingAgent.most == 1
    assert quick.timings.started_at >= slow.timings.started_at + 1.0


def test_tasks_for_a_pool_that_gave_up_fail_with_its_reason_and_later_ones_are_refused(tmp_path):
    queen = make_queen(tmp_path, {"good": pool(SLEEP), "bad": pool("tests.agents:BrokenAgent")})

    async def scenario():
        await queen.start()
        early = await queen.submit(Task(capability="test.broken"))  # while the pool still tries
        assert queen.book.get(early).result.status is TaskStatus.QUEUED
        result = await queen.result(early, timeout_s=20)
        with pytest.raises(SchedulingError) as refused:
            await queen.submit(Task(capability="test.broken"))
        return result, refused.value

    result, refused = run(scenario())
    assert result.status is TaskStatus.FAILED and result.error_type == "SchedulingError"
    assert result.error.startswith("no agent can run 'test.broken': pool 'bad': failed to start (3 times")
    assert str(refused).startswith("no agent can run 'test.broken': pool 'bad': failed to start")


def test_a_queued_task_handed_over_when_its_pool_gave_up_counts_as_delegated(tmp_path):
    # Handed over when the swarm fails or when its pool can never run the task: one path, one
    # count in tasks_delegated (the second way was once not counted).
    queen = make_queen(tmp_path, {"bad": pool("tests.agents:BrokenAgent")}, peers=FakePeers(["elsewhere"]))
    counted = []
    queen.metrics.delegated = lambda capability, to: counted.append((capability, to))

    async def scenario():
        await queen.start()
        early = await queen.submit(Task(capability="test.broken"))  # while the pool still tries
        assert queen.book.get(early).result.status is TaskStatus.QUEUED
        rec = queen.book.get(early)
        await async_wait_until(lambda: rec.delegated_to is not None, 20, "the hand-over")
        return rec.delegated_to

    swarm, _ = run(scenario())
    assert swarm == "elsewhere"
    assert counted == [("test.broken", "elsewhere")]


# -- capability families ----------------------------------------------------------------------

ECHO = "tests.agents:EchoFamilyAgent"


def family_pool(agent=ECHO, params=None, capabilities=None, **kw):
    spec = {"class": agent, "params": params or {}}
    if capabilities:
        spec["capabilities"] = capabilities
    return {**pool(agent, **kw), "agent": spec}


def test_tasks_of_any_capability_in_a_family_run_on_its_agents_queued_under_the_family(tmp_path):
    queen = make_queen(tmp_path, {"echo": family_pool()})

    async def scenario():
        ids = [
            await queen.submit({"capability": cap, "payload": {"s": 0.3, "anything": [1]}})
            for cap in ("echo.a", "echo.b", "echo.deep.c")
        ]
        # One agent, one task at a time: the other two wait under the family's one key.
        await async_wait_until(lambda: queen.status()["running"] == 1, what="the first task to run")
        depths = queen.status()["queue_depth"]
        return depths, [await queen.result(i, timeout_s=10) for i in ids]

    depths, results = run(scenario())
    assert depths == {"echo.*": 2}
    assert [r.output["capability"] for r in results] == ["echo.a", "echo.b", "echo.deep.c"]
    assert all(r.ok and r.output["payload"]["anything"] == [1] for r in results)  # not checked here


def test_the_exact_capability_wins_over_a_family_that_covers_it(tmp_path):
    exact = family_pool(
        "actors:CallableAgent", {"function": "tests.agents:double"}, capabilities=["echo.special"]
    )
    queen = make_queen(tmp_path, {"echo": family_pool(), "exact": exact})

    async def scenario():
        special = await queen.run(Task(capability="echo.special", payload={"x": 4}), timeout_s=10)
        other = await queen.run(Task(capability="echo.other", payload={"x": 4}), timeout_s=10)
        return special, other

    special, other = run(scenario())
    assert special.ok and special.output == 8
    assert other.ok and other.output["capability"] == "echo.other"


def test_a_name_the_family_does_not_cover_is_not_offered_here(tmp_path):
    queen = make_queen(tmp_path, {"echo": family_pool()})  # no other swarm (FakePeers([]))

    async def scenario():
        for cap in ("echo", "echoes.a"):
            with pytest.raises(DelegationError):  # handed over, and nobody else takes it
                await queen.submit({"capability": cap})

    run(scenario())
    assert not queen.book.records


def test_a_pool_offering_a_family_grows_with_the_family_backlog(tmp_path):
    queen = make_queen(tmp_path, {"echo": family_pool(max_agents=3, scale_up_backlog=1.0)})

    async def scenario():
        ids = [await queen.submit({"capability": f"echo.n{i}", "payload": {"s": 0.5}}) for i in range(8)]
        await async_wait_until(lambda: queen.pools["echo"].count() > 1, what="the pool to grow")
        return [await queen.result(i, timeout_s=20) for i in ids]

    assert all(r.ok for r in run(scenario()))


def test_a_family_task_replayed_from_the_journal_is_queued_here_again(tmp_path):
    queen = make_queen(tmp_path, {"echo": family_pool()})

    async def submit():
        return await queen.submit({"capability": "echo.a", "payload": {"s": 5}})

    task_id = run(submit())
    replayed = make_queen(tmp_path, {"echo": family_pool()})
    replayed._ensure_started = lambda: None
    replayed.book.replay(replayed.journal.read(), replayed.local_caps)
    assert replayed.book.get(task_id).result.status is TaskStatus.QUEUED


def test_the_catalog_lists_a_family_as_the_entries_its_agent_class_returns(tmp_path):
    queen = make_queen(tmp_path, {"echo": family_pool(params={"listed": ["a", "b"]})})
    catalog = {e["capability"]: e for e in run(queen.catalog())}
    assert sorted(catalog) == ["echo.a", "echo.b"]  # neither the family nor one outside it
    a = catalog["echo.a"]
    assert a["swarm"] == "front" and a["pools"] == ["echo"]
    assert a["description"] == "echoes as a (listed in ns)"  # the queen's system namespace
    assert a["schema"]["properties"] == {"text": {"type": "string"}}
    assert a["output_schema"] == {"type": "object"} and a["annotations"] == {"readOnlyHint": True}


def test_a_family_whose_listing_fails_is_listed_as_itself_with_the_reason(tmp_path):
    listed_fails = family_pool(params={"listing_fails": True})
    unlisted = family_pool("actors:CallableAgent", {"function": "tests.agents:double"}, ["calc.*"])
    queen = make_queen(tmp_path, {"echo": listed_fails, "calc": unlisted})
    catalog = {e["capability"]: e for e in run(queen.catalog())}
    assert sorted(catalog) == ["calc.*", "echo.*"]
    assert catalog["echo.*"]["note"] == (
        "its capabilities could not be listed: ConnectionError: the listing is down"
    )
    assert catalog["calc.*"]["note"] == "a family: any capability under it"
    assert catalog["calc.*"]["schema"] is None


def test_the_catalog_lists_the_agents_output_schema_and_annotations_the_config_overrides(tmp_path):
    stats = {
        "class": "actors:TextStatsAgent",
        "capabilities": [{"name": "text.stats", "annotations": {"idempotentHint": False, "title": "Stats"}}],
    }
    queen = make_queen(
        tmp_path, {"stats": {**pool(None), "agent": stats}, "sum": pool("actors:ChecksumAgent")}
    )
    catalog = {e["capability"]: e for e in run(queen.catalog())}
    entry = catalog["text.stats"]
    assert entry["output_schema"]["required"] == [
        "characters",
        "words",
        "sentences",
        "unique_words",
        "mean_word_length",
        "top_words",
    ]
    # TextStatsAgent's own hints, its idempotentHint overridden and a title added by the config
    assert entry["annotations"] == {
        "readOnlyHint": True,
        "idempotentHint": False,
        "openWorldHint": False,
        "title": "Stats",
    }
    assert "output_schema" not in catalog["data.checksum"] and "annotations" not in catalog["data.checksum"]


# -- delegation in batches --------------------------------------------------------------------


class Local:
    """An object called as a Ray actor handle is (`.method.remote(*args)`, awaited), counting
    its calls by method; each call takes a turn of the event loop, as a round trip would."""

    def __init__(self, obj):
        self.obj, self.calls = obj, []

    def __getattr__(self, method):
        local = self

        class Method:
            def remote(self, *args):
                async def call():
                    await asyncio.sleep(0)
                    local.calls.append(method)
                    out = getattr(local.obj, method)(*args)
                    return await out if asyncio.iscoroutine(out) else out

                return call()

        return Method()


def delegating_pair(tmp_path, **back_swarm):
    """`front` (offering only test.flaky) delegating to `back` (test.sleep), both real queens,
    through a real registry and `ActorPeers`."""
    from actors._private.queen.delegator import ActorPeers
    from actors._private.registry import MetaRegistry

    front = make_queen(tmp_path, {"f": pool("tests.agents:FlakyAgent")})
    agent = {"class": SLEEP, "max_concurrent_tasks": 64}
    back_pool = {**pool(SLEEP), "agent": agent}
    back_config = SwarmConfig.model_validate(
        {"name": "back", "pools": {"s": back_pool}, "journal": {"uri": str(tmp_path)}, **back_swarm}
    )
    back = SwarmQueen("ns", back_config, RegistryConfig())
    registry = MetaRegistry(RegistryConfig())
    actors = {"registry": Local(registry), "queen:back": Local(back), "queen:front": Local(front)}
    front.delegator.peers = ActorPeers(actors.__getitem__, lambda name: None)
    back._actor = front._actor = actors.__getitem__
    return front, back, actors


def test_a_run_many_batch_for_another_swarm_is_handed_over_in_one_call_and_followed_in_few(tmp_path):
    front, back, actors = delegating_pair(tmp_path)

    async def scenario():
        await back.start()
        await front.start()
        return await front.run_many([Task(capability="test.sleep", payload={"label": i}) for i in range(40)])

    results = run(scenario())
    assert [r.output["label"] for r in results] == list(range(40))
    assert {r.status for r in results} == {TaskStatus.SUCCEEDED} and {r.swarm for r in results} == {"back"}
    back_calls = actors["queen:back"].calls
    assert back_calls.count("accept_many") == 1
    assert back_calls.count("submit") == back_calls.count("result") == 0
    assert 1 <= back_calls.count("results_many") <= 4  # tasks ending together come back together
    assert actors["registry"].calls.count("routing") == 1
    assert front.status()["tasks"]["delegated"] == 40 and back.status()["tasks"]["succeeded"] == 40


def test_accept_many_accepts_each_task_it_can_and_returns_the_error_of_each_it_cannot(tmp_path):
    _, back, _ = delegating_pair(tmp_path, queen={"max_queued_tasks": 1})  # then refused as full

    async def scenario():
        await back.start()
        tasks = [Task(capability="test.sleep", payload={"s": 0.5}) for _ in range(70)]
        return await back.accept_many(tasks)

    out = run(scenario())
    ids = [o for o in out if isinstance(o, str)]
    errors = [o for o in out if not isinstance(o, str)]
    assert ids and errors and len(ids) + len(errors) == 70
    assert {type(e).__name__ for e in errors} == {"BackpressureError"}
    entries = Journal(journal_location(str(tmp_path), "ns", "back")).read()
    journaled = {e["task"]["id"] for e in entries if e["k"] == "acc"}
    assert set(ids) <= journaled  # acknowledged only once durable


def test_results_many_returns_what_has_ended_and_says_which_task_is_unknown(tmp_path):
    _, back, _ = delegating_pair(tmp_path)

    async def scenario():
        await back.start()
        quick = await back.submit(Task(capability="test.sleep", payload={"s": 0}))
        slow = await back.submit(Task(capability="test.sleep", payload={"s": 5}))
        out = await back.results_many([quick, slow, "back:nope"], 10)
        await back.cancel(slow)
        return quick, out

    quick, (first, second, third) = run(scenario())
    assert first.task_id == quick and first.status is TaskStatus.SUCCEEDED
    assert second is None
    assert type(third).__name__ == "TaskNotFoundError"
