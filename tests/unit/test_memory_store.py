"""The memory store's locking, in one process: a memory whose calls block until released, so
cancellation and concurrency can be driven exactly (tests/cluster runs the real store)."""

import asyncio
import threading
from types import SimpleNamespace

import numpy as np

from actors import MemoryStoreConfig
from actors._private.memory_store import MemoryStore
from tests.waiting import async_wait_until


class GatedMemory:
    """Stands in for HybridMemory: each call runs in the store's worker thread and blocks
    until its gate opens; counts how many writes run at once."""

    def __init__(self):
        self.gates = {"search": threading.Event(), "upsert": threading.Event()}
        self.entered = {"search": 0, "upsert": 0}
        self.writing = self.most_writing = 0
        self.records = {}
        self.namespaces = ["gated"]
        self.guard = threading.Lock()
        self.embedder, self.dim = SimpleNamespace(name="gated"), 3
        self.config = SimpleNamespace(dense_kind="flat")

    def _pass(self, kind):
        with self.guard:
            self.entered[kind] += 1
        self.gates[kind].wait(10)

    def search(self, query, k, **kwargs):
        self._pass("search")
        return []

    def sync_log(self):
        return asyncio.sleep(0)  # nothing logged: nothing to sync

    def upsert(self, records, vectors=None, synced=True):
        with self.guard:
            self.writing += 1
            self.most_writing = max(self.most_writing, self.writing)
        self._pass("upsert")
        for r in records:
            self.records[r["id"]] = SimpleNamespace(namespace="m", tier="short")
        with self.guard:
            self.writing -= 1
        return [r["id"] for r in records]


def store():
    s = MemoryStore("ns", "m", MemoryStoreConfig(), memory=GatedMemory())
    s._ensure_loop = lambda: None  # no upkeep loop: nothing but the test touches the memory
    return s


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_a_writer_cancelled_while_waiting_does_not_block_later_readers():
    s = store()

    async def scenario():
        reader = asyncio.create_task(s.search("q"))
        await async_wait_until(lambda: s.memory.entered["search"] == 1)
        writer = asyncio.create_task(s.upsert([{"id": "a"}]))
        await asyncio.sleep(0)  # let it queue behind the reader
        writer.cancel()
        s.memory.gates["search"].set()
        await reader
        return await asyncio.wait_for(s.search("again"), 5)

    assert run(scenario()) == []


def test_a_write_cancelled_mid_flight_keeps_the_lock_until_its_thread_ends():
    s = store()

    async def scenario():
        first = asyncio.create_task(s.upsert([{"id": "a"}]))
        await async_wait_until(lambda: s.memory.entered["upsert"] == 1)
        first.cancel()
        second = asyncio.create_task(s.upsert([{"id": "b"}]))
        await asyncio.sleep(0.1)  # give a wrongly admitted second writer the time to enter
        assert s.memory.entered["upsert"] == 1
        s.memory.gates["upsert"].set()
        return await second

    assert run(scenario()) == ["b"]
    assert s.memory.most_writing == 1 and set(s.memory.records) == {"a", "b"}


def test_stats_wait_for_a_write_in_progress():
    s = store()

    async def scenario():
        write = asyncio.create_task(s.upsert([{"id": "a"}]))
        await async_wait_until(lambda: s.memory.entered["upsert"] == 1)
        stats = asyncio.ensure_future(s.stats())
        await asyncio.sleep(0.1)
        assert not stats.done()  # it would iterate the records the writer is changing
        s.memory.gates["upsert"].set()
        await write
        return await stats

    assert run(scenario())["records"] == 1


def test_concurrent_upserts_share_log_syncs_and_each_is_durable_and_found_once_acknowledged(tmp_path):
    from models import Embedder
    from models._private.memory.hybrid import HybridMemory, MemoryConfig

    embedder = Embedder()
    memory = HybridMemory(["m"], MemoryConfig(path=str(tmp_path)), embedder=embedder)
    s = MemoryStore("ns", "m", MemoryStoreConfig(), memory=memory)
    s._ensure_loop = lambda: None
    writes = []
    real_write = memory.wal._log.write

    def counted_write(data):  # the real write and fdatasync, counted
        writes.append(len(data))
        real_write(data)

    memory.wal._log.write = counted_write
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((40, memory.dim)).astype(np.float32)

    async def writer(n):
        await s.upsert([{"id": f"r{n}", "namespace": "m", "text": f"note keyword{n}"}], vectors[n : n + 1])
        hits = await s.search(f"keyword{n}", 1, mode="lexical")  # found by the next search
        assert [h["record"]["id"] for h in hits] == [f"r{n}"]

    async def main():
        await asyncio.gather(*(writer(n) for n in range(40)))
        await s.delete(["r0"])  # a write outside the group sync follows it in the log

    run(main())
    assert 0 < len(writes) < 40  # forty acknowledged upserts, fewer syncs
    memory.close()
    again = HybridMemory(["m"], MemoryConfig(path=str(tmp_path)), embedder=embedder)
    assert sorted(again.records) == sorted(f"r{n}" for n in range(1, 40))
    assert [h.record.id for h in again.search("keyword7", 1, mode="lexical")] == ["r7"]
    again.close()
