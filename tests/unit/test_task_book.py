import asyncio

import pytest

from actors._private.queen.task_book import (
    TaskBook,
    acc_entry,
    att_entry,
    del_entry,
    fin_entry,
    snap_entry,
    step_entry,
)
from actors._private.task import Task, TaskResult, TaskStatus
from models._private.core.errors import TaskNotFoundError
from models._private.core.journal import Journal

LOCAL = {"text.stats"}


def task(n, capability="text.stats", **kw):
    return Task(id=f"s:{n}", capability=capability, origin_swarm="s", **kw)


def final(n, status=TaskStatus.SUCCEEDED, capability="text.stats", output=None):
    return TaskResult(task_id=f"s:{n}", capability=capability, status=status, output=output)


def replayed(entries, keep_results=100):
    book = TaskBook("s", keep_results)
    pending = book.replay(entries, LOCAL)
    return book, pending


def ids(records):
    return [r.task.id for r in records]


def test_entries_keep_their_durable_format():
    t = task(1)
    assert acc_entry(t) == {"k": "acc", "task": t.model_dump(mode="json", exclude={"steps", "trace"})}
    assert att_entry("s:1", 2) == {"k": "att", "id": "s:1", "n": 2}
    assert del_entry("s:1", ("b", "b:9")) == {"k": "del", "id": "s:1", "to": "b", "rid": "b:9"}
    f = final(1, output={"x": 1})
    assert fin_entry(f) == {"k": "fin", "id": "s:1", "res": f.model_dump(mode="json"), "led": True}
    assert snap_entry("s.a.0", {"n": 3}) == {"k": "snap", "agent": "s.a.0", "state": {"n": 3}}
    assert step_entry("s:1", 0, 2, {"x": 1}) == {"k": "step", "id": "s:1", "i": 0, "n": 2, "step": {"x": 1}}
    # A task's steps are entries of their own, never part of its acc entry.
    assert "steps" not in acc_entry(task(1, steps=[{"x": 1}]))["task"]


def test_an_untraced_tasks_acc_entry_is_what_it_was_before_tracing():
    # With tracing off (the default) an entry has no `trace` key, so a journal written now
    # still replays in a version without tracing, whose Task forbids unknown fields.
    assert "trace" not in acc_entry(task(1))["task"]
    traced = task(1, trace={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"})
    entry = acc_entry(traced)
    assert entry["task"]["trace"] == traced.trace
    assert Task.model_validate(entry["task"]) == traced
    assert Task.model_validate(acc_entry(task(1))["task"]).trace is None


def test_replay_queues_unfinished_local_tasks_and_follows_delegated_ones():
    entries = [
        acc_entry(task(1)),
        acc_entry(task(2, capability="other.cap")),
        del_entry("s:2", ("b", "b:7")),
        acc_entry(task(3)),
        fin_entry(final(3)),
        acc_entry(task(4)),
    ]
    book, pending = replayed(entries)
    assert ids(pending) == ["s:1", "s:2", "s:4"]  # in acceptance order, so FIFO holds
    by_id = {r.task.id: r for r in pending}
    assert by_id["s:1"].result.status is TaskStatus.QUEUED and by_id["s:1"].delegated_to is None
    assert by_id["s:2"].result.status is TaskStatus.DELEGATED and by_id["s:2"].delegated_to == ("b", "b:7")
    assert list(book.finished) == ["s:3"] and book.records["s:3"].done.is_set()
    assert book.counts["accepted"] == 4 and book.counts["succeeded"] == 1 and book.counts["replayed"] == 3


def test_a_finished_result_is_recorded_once():
    entries = [
        acc_entry(task(1)),
        fin_entry(final(1, output="first")),
        acc_entry(task(1)),  # a retried submit, or an append racing a compaction
        fin_entry(final(1, status=TaskStatus.FAILED, output="second")),
    ]
    book, pending = replayed(entries)
    assert pending == []
    assert book.get("s:1").result.output == "first"
    assert book.counts["accepted"] == 1 and book.counts["succeeded"] == 1 and book.counts["failed"] == 0


def test_attempts_and_the_latest_hand_over_survive_replay():
    entries = [
        acc_entry(task(1)),
        att_entry("s:1", 1),
        att_entry("s:1", 3),
        att_entry("s:1", 2),  # out of order: the highest wins
        acc_entry(task(2, capability="other.cap")),
        del_entry("s:2", ("b", "b:1")),
        del_entry("s:2", ("c", "c:5")),  # handed over again after b lost it
        att_entry("s:gone", 4),  # for a task no longer journaled: ignored
    ]
    book, pending = replayed(entries)
    assert book.get("s:1").task.attempt == 3
    assert book.get("s:2").delegated_to == ("c", "c:5")
    assert ids(pending) == ["s:1", "s:2"]


def test_a_result_whose_task_was_compacted_away_comes_back_finished():
    book, pending = replayed([fin_entry(final(7, status=TaskStatus.TIMED_OUT))])
    rec = book.get("s:7")
    assert pending == [] and rec.done.is_set()
    assert rec.result.status is TaskStatus.TIMED_OUT and rec.task.origin_swarm == "s"
    assert book.counts["timed_out"] == 1


def test_a_finished_delegated_task_is_counted_as_handed_over():
    entries = [
        acc_entry(task(1, capability="other.cap")),
        del_entry("s:1", ("b", "b:1")),
        fin_entry(final(1)),
    ]
    book, _ = replayed(entries)
    assert book.counts["delegated"] == 1 and book.counts["succeeded"] == 0


def test_replay_keeps_only_the_newest_results_past_keep_results():
    entries = [e for n in range(5) for e in (acc_entry(task(n)), fin_entry(final(n)))]
    book, _ = replayed(entries, keep_results=2)
    assert list(book.finished) == ["s:3", "s:4"]
    with pytest.raises(TaskNotFoundError):
        book.get("s:0")
    assert book.counts["succeeded"] == 5  # counted before being dropped


def test_snapshots_keep_each_agents_latest_checkpoint():
    entries = [snap_entry("a0", {"n": 1}), snap_entry("a1", {"n": 5}), snap_entry("a0", {"n": 2})]
    book, _ = replayed(entries)
    assert book.snapshots == {"a0": {"n": 2}, "a1": {"n": 5}}


def test_compaction_replays_to_the_same_pending_finished_and_delegated_sets():
    entries = [
        acc_entry(task(1)),
        att_entry("s:1", 2),
        acc_entry(task(2, capability="other.cap")),
        del_entry("s:2", ("b", "b:3")),
        acc_entry(task(3)),
        fin_entry(final(3, output=42)),
        acc_entry(task(4)),
        snap_entry("a0", {"n": 1}),
    ]
    book, _ = replayed(entries)
    being_journaled = book.get("s:4")
    being_journaled.final = final(4, status=TaskStatus.CANCELLED)  # its `fin` is not written yet
    again, pending = replayed(book.live_entries())
    assert ids(pending) == ["s:1", "s:2"]
    assert again.get("s:1").task.attempt == 2
    assert again.get("s:2").delegated_to == ("b", "b:3")
    assert again.get("s:3").result.output == 42
    assert again.get("s:4").result.status is TaskStatus.CANCELLED  # final once journaled
    assert again.snapshots == {"a0": {"n": 1}}
    assert len(book.live_entries()) < len(entries)


def test_replay_reads_what_a_journal_stored(tmp_path):
    entries = [acc_entry(task(1)), acc_entry(task(2)), fin_entry(final(2)), snap_entry("a0", 1)]

    async def write():
        journal = Journal(str(tmp_path))
        await journal.append(*entries)
        journal.close()

    asyncio.run(write())
    book, pending = replayed(Journal(str(tmp_path)).read())
    assert ids(pending) == ["s:1"] and list(book.finished) == ["s:2"] and book.snapshots == {"a0": 1}


def test_accept_names_an_unnamed_task_after_the_swarm_and_settle_makes_it_final():
    book = TaskBook("s", 10)
    rec = book.accept(Task(capability="text.stats"), TaskStatus.QUEUED)
    assert rec.task.id.startswith("s:") and rec.task.origin_swarm == "s"
    assert book.pending() == [rec] and not rec.done.is_set()
    done = rec.result.model_copy(update={"status": TaskStatus.SUCCEEDED})
    book.settle(rec, done)
    assert rec.done.is_set() and rec.result is done and book.pending() == []
    assert list(book.finished) == [rec.task.id]


def test_a_rerouted_local_task_comes_back_delegated_not_queued():
    # A failed swarm handed a task it offers to another swarm: after a restart it must be
    # followed there, never also queued here or handed over again on the next escalation.
    _, pending = replayed([acc_entry(task(1)), del_entry("s:1", ("b", "b:3"))])
    (rec,) = pending
    assert rec.delegated_to == ("b", "b:3") and rec.result.status is TaskStatus.DELEGATED


def test_steps_replay_once_each_in_order_and_are_dropped_when_the_task_ends():
    entries = [
        acc_entry(task(1)),
        step_entry("s:1", 0, 1, "model"),
        step_entry("s:1", 1, 1, "tool"),
        step_entry("s:1", 1, 1, "tool"),  # an append that raced a compaction: kept once
        acc_entry(task(2)),
        step_entry("s:2", 0, 1, "model"),
        fin_entry(final(2)),
        step_entry("s:9", 0, 1, "of a task compacted away"),
    ]
    book, pending = replayed(entries)
    assert ids(pending) == ["s:1"] and book.get("s:1").steps == ["model", "tool"]
    assert book.get("s:2").steps == []  # ended: no attempt will resume from them


def test_compaction_keeps_the_steps_of_live_tasks_only():
    entries = [
        acc_entry(task(1)),
        step_entry("s:1", 0, 1, {"kind": "model"}),
        acc_entry(task(2)),
        step_entry("s:2", 0, 1, {"kind": "model"}),
        fin_entry(final(2)),
    ]
    book, _ = replayed(entries)
    live = book.live_entries()
    assert [e["id"] for e in live if e["k"] == "step"] == ["s:1"]
    again, _ = replayed([*live, step_entry("s:1", 0, 1, {"kind": "model"})])
    assert again.get("s:1").steps == [{"kind": "model"}]


def test_a_step_is_journaled_only_for_the_attempt_that_runs_the_task(tmp_path):
    from actors._private.config import QueenConfig
    from actors._private.metrics import SwarmMetrics
    from models._private.core.errors import StaleAttemptError

    async def scenario():
        journal = Journal(str(tmp_path))
        book = TaskBook("s", 10, journal, SwarmMetrics("ns", "s"), QueenConfig())
        rec = book.admit(task(1))
        book.start_attempt(rec, "s.p.0")
        assert await book.record_steps(rec, 1, "s.p.0", [{"kind": "model"}]) == 1
        with pytest.raises(StaleAttemptError, match=r"attempt 1 on s\.p\.0 runs it"):
            await book.record_steps(rec, 0, "s.p.0", [{"kind": "late"}])  # an earlier attempt
        with pytest.raises(StaleAttemptError):
            await book.record_steps(rec, 1, "s.p.1", [{"kind": "late"}])  # same number, other agent
        book.retry(rec, "lost", "RuntimeError")
        with pytest.raises(StaleAttemptError, match="retrying"):
            await book.record_steps(rec, 1, "s.p.0", [{"kind": "late"}])
        book.start_attempt(rec, "s.p.1")
        assert await book.record_steps(rec, 2, "s.p.1", [{"kind": "tool"}, {"kind": "model"}]) == 3
        journal.close()

    asyncio.run(scenario())
    _, (rec,) = replayed(Journal(str(tmp_path)).read())
    assert rec.steps == [{"kind": "model"}, {"kind": "tool"}, {"kind": "model"}] and rec.task.attempt == 2
