import asyncio
import itertools
import os
import time

import pytest

from models._private.core.journal import Journal, decode, encode, journal_location
from tests.waiting import async_wait_until


def run(coro):
    return asyncio.run(coro)


def records(n, start=0):
    return [{"k": "acc", "id": f"s:{i}", "payload": {"text": "x" * (i % 7)}} for i in range(start, start + n)]


async def append_all(journal, recs):
    await asyncio.gather(*(journal.append(r) for r in recs))


def test_appended_records_come_back_in_order(tmp_path):
    j = Journal(str(tmp_path))
    run(append_all(j, records(50)))
    j.close()
    assert Journal(str(tmp_path)).read() == records(50)


def test_concurrent_appends_share_writes(tmp_path, monkeypatch):
    j = Journal(str(tmp_path))
    writes = []
    real = j._log.write
    monkeypatch.setattr(j._log, "write", lambda data: (writes.append(len(data)), real(data)))
    run(append_all(j, records(200)))
    assert len(writes) < 200  # group commit: fewer syncs than records
    assert j.read() == records(200)


@pytest.mark.parametrize("cut", [1, 3, 7, 8, 9, 20])
def test_a_torn_tail_is_dropped_never_misread(tmp_path, cut):
    j = Journal(str(tmp_path))
    run(append_all(j, records(10)))
    j.close()
    (path,) = [p for p in tmp_path.iterdir() if p.suffix == ".log"]
    size = path.stat().st_size
    last = len(encode(records(10)[-1]))
    with open(path, "r+b") as f:
        f.truncate(size - last + cut if cut < last else size - 1)
    again = Journal(str(tmp_path))
    assert again.read() == records(9)
    run(append_all(again, records(1, start=100)))  # appends follow the last whole record
    assert Journal(str(tmp_path)).read() == records(9) + records(1, start=100)


def test_a_flipped_byte_is_detected_by_the_checksum():
    data = bytearray(encode({"a": 1}) + encode({"b": 2}))
    data[-2] ^= 0xFF
    assert decode(bytes(data))[0] == [{"a": 1}]


def test_every_truncation_point_yields_a_prefix():
    recs = records(5)
    data = b"".join(encode(r) for r in recs)
    for n in range(len(data) + 1):
        got, _ = decode(data[:n])
        assert got == recs[: len(got)]


def test_rewrite_compacts_to_a_new_generation(tmp_path):
    j = Journal(str(tmp_path))
    run(append_all(j, records(100)))
    before = j.size_bytes()
    run(j.rewrite(lambda: records(3)))
    run(j.append({"k": "late"}))
    assert j.size_bytes() < before
    assert sorted(os.listdir(tmp_path)) == ["gen-000002.log"]
    assert Journal(str(tmp_path)).read() == [*records(3), {"k": "late"}]


def test_a_crash_during_compaction_keeps_the_old_generation(tmp_path):
    j = Journal(str(tmp_path))
    run(append_all(j, records(4)))
    (tmp_path / "gen-000002.log.tmp").write_bytes(encode({"half": "written"}))
    assert Journal(str(tmp_path)).read() == records(4)


def test_object_store_journal_appends_replays_and_compacts():
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe_file("/journal-test/other/keep.txt", b"someone else's")
    uri = journal_location("memory://journal-test", "ns", "swarm")
    assert uri == "memory://journal-test/ns/swarm"
    j = Journal(uri)
    run(append_all(j, records(20)))
    assert Journal(uri).read() == records(20)
    run(j.rewrite(lambda: records(2)))
    run(j.append({"k": "after"}))
    assert Journal(uri).read() == [*records(2), {"k": "after"}]
    j.purge()
    assert Journal(uri).read() == []
    assert fs.cat_file("/journal-test/other/keep.txt") == b"someone else's"  # only its prefix went


def test_appends_racing_a_compaction_are_kept(tmp_path):
    j = Journal(str(tmp_path))

    async def scenario():
        state = records(5)
        await append_all(j, state)
        extra = records(3, start=50)
        state.extend(extra)  # as the queen does: change the state, then journal the change
        # Appends written before the build are in the state it reads; later ones follow it.
        await asyncio.gather(j.rewrite(lambda: list(state)), *(j.append(r) for r in extra))
        return extra

    extra = run(scenario())
    got = Journal(str(tmp_path)).read()
    assert got[:5] == records(5) and all(r in got for r in extra)


class FlakyDisk:
    """Stands in for `os.write`: writes at most `chunk` bytes a call, and on command writes part
    of the bytes and then fails as a full disk does."""

    def __init__(self, chunk: int | None = None):
        self.real = os.write
        self.chunk = chunk
        self.fail_next = False

    def __call__(self, fd, data):
        data = bytes(data)
        if self.fail_next:
            self.fail_next = False
            self.real(fd, data[: len(data) // 2])
            raise OSError(28, "No space left on device")
        return self.real(fd, data[: self.chunk] if self.chunk else data)


def test_short_writes_are_continued_until_every_byte_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr("models._private.core.journal.os.write", FlakyDisk(chunk=7))
    j = Journal(str(tmp_path))
    run(append_all(j, records(30)))
    j.close()
    assert Journal(str(tmp_path)).read() == records(30)


def test_a_failed_write_is_cut_back_so_later_acknowledged_records_survive(tmp_path, monkeypatch):
    disk = FlakyDisk()
    monkeypatch.setattr("models._private.core.journal.os.write", disk)
    j = Journal(str(tmp_path))

    async def scenario():
        await j.append(*records(3))
        disk.fail_next = True
        with pytest.raises(OSError):
            await j.append(*records(2, start=3))  # refused: never acknowledged
        await j.append(*records(4, start=5))  # acknowledged after the failure

    run(scenario())
    j.close()
    assert Journal(str(tmp_path)).read() == records(3) + records(4, start=5)


def test_write_now_after_a_failed_write_keeps_the_journal_whole(tmp_path, monkeypatch):
    disk = FlakyDisk()
    monkeypatch.setattr("models._private.core.journal.os.write", disk)
    j = Journal(str(tmp_path))
    j.write_now(*records(2))
    disk.fail_next = True
    with pytest.raises(OSError):
        j.write_now(*records(2, start=2))
    j.write_now(*records(1, start=4))
    j.close()
    assert Journal(str(tmp_path)).read() == records(2) + records(1, start=4)


def test_compaction_happens_under_steady_load(tmp_path, monkeypatch):
    # Records arrive faster than the disk syncs them (as submits do to a busy queen), so every
    # pass of the writer starts with some pending; the compaction must still take its turn.
    real_sync = os.fdatasync

    def slow_sync(fd):  # a disk whose sync takes 2 ms, as a real one may
        time.sleep(0.002)
        real_sync(fd)

    monkeypatch.setattr("models._private.core.journal.os.fdatasync", slow_sync)
    j = Journal(str(tmp_path))
    state: list[dict] = []
    acks: list[asyncio.Future] = []

    async def producer():
        for i in itertools.count():
            record = {"k": "acc", "id": f"s:{i}"}
            state.append(record)
            acks.append(asyncio.ensure_future(j.append(record)))
            await asyncio.sleep(0)  # arrivals without pause; this waits for nothing

    async def scenario():
        load = asyncio.create_task(producer())
        await async_wait_until(lambda: sum(a.done() for a in acks) > 200)
        try:
            await asyncio.wait_for(j.rewrite(lambda: list(state)), 5)
        finally:
            load.cancel()
        await asyncio.gather(*acks)

    run(scenario())
    assert sorted(os.listdir(tmp_path)) == ["gen-000002.log"]
    got = Journal(str(tmp_path)).read()
    assert {r["id"] for r in got} == {r["id"] for r in state}


def test_records_queued_without_a_waiter_are_not_lost_to_another_writers_failed_write(tmp_path, monkeypatch):
    """`append_nowait` records ride with the next write; when that write fails, only its own
    waiters are told. The records' owner flushes later (a queen admitting tasks, the memory
    store's group sync): its flush must not report them stored while they are not."""
    disk = FlakyDisk()
    monkeypatch.setattr("models._private.core.journal.os.write", disk)
    j = Journal(str(tmp_path))

    async def scenario():
        await j.append(*records(1))
        j.append_nowait(*records(1, start=1), wake=False)  # its owner flushes below
        disk.fail_next = True
        with pytest.raises(OSError):
            await j.append(*records(1, start=2))  # another writer's write, which fails
        await j.flush()  # the owner's: everything appended so far is durable

    run(scenario())
    j.close()
    assert Journal(str(tmp_path)).read() == records(2)


def test_a_writer_arriving_during_a_failed_write_is_answered(tmp_path, monkeypatch):
    """The write loop used to end with the failed write, leaving the waiters that arrived
    during it waiting until some later append started it again."""
    import threading

    under_way, gate = threading.Event(), threading.Event()

    class SlowFailingDisk(FlakyDisk):
        def __call__(self, fd, data):
            if self.fail_next:
                under_way.set()
                gate.wait(10)  # the failing write lasts until the next writer has queued
            return super().__call__(fd, data)

    disk = SlowFailingDisk()
    monkeypatch.setattr("models._private.core.journal.os.write", disk)
    j = Journal(str(tmp_path))

    async def scenario():
        await j.append(*records(1))
        disk.fail_next = True
        failing = asyncio.ensure_future(j.append(*records(1, start=1)))
        await async_wait_until(under_way.is_set, what="the failing write under way")
        later = asyncio.ensure_future(j.append(*records(1, start=2)))
        await asyncio.sleep(0)  # queued behind the write under way
        gate.set()
        with pytest.raises(OSError):
            await failing
        await asyncio.wait_for(later, 10)

    run(scenario())
    j.close()
    assert Journal(str(tmp_path)).read() == records(1) + records(1, start=2)
