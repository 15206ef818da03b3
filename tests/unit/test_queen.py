"""The queen's policy in one process: colocated agents, a real journal on disk, and fakes for
the registry and the other swarms (the cluster tests run the same code as Ray actors)."""

import asyncio
import os
import time

import pytest

from actors import RegistryConfig, SwarmConfig, Task, TaskStatus
from actors._private.queen.queen import SwarmQueen
from models._private.core.errors import SchedulingError
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
