"""The token and cost ledger: buckets that widen as they age, totals by dimension and since a
time, and a queen's ledger across replay and compaction (each task's usage counted once)."""

import pytest

from actors._private.queen.task_book import TaskBook, acc_entry, del_entry, fin_entry
from actors._private.task import Task, TaskResult, TaskStatus, Timings
from models._private.core.usage import Spent, UsageLedger

DAY = 86400


def spent(tokens, cost=0, requests=1):
    return Spent(requests=requests, prompt_tokens=tokens, completion_tokens=tokens // 2, cost_microusd=cost)


def test_totals_group_by_any_dimension_and_sum_exactly():
    ledger = UsageLedger(("key", "model"))
    ledger.add(1000.0, ("k1", "m1"), spent(10, 3))
    ledger.add(1010.0, ("k1", "m2"), spent(20, 7))
    ledger.add(5000.0, ("k2", "m1"), spent(40, 1))
    assert ledger.totals(["key"]) == [
        {"key": "k1", "requests": 2, "prompt_tokens": 30, "completion_tokens": 15, "cost_microusd": 10},
        {"key": "k2", "requests": 1, "prompt_tokens": 40, "completion_tokens": 20, "cost_microusd": 1},
    ]
    assert [r["model"] for r in ledger.totals(["model"])] == ["m1", "m2"]
    assert ledger.totals()[0]["prompt_tokens"] == 70
    # One key's rows only (a key without admin reading /v1/usage).
    assert [(r["model"], r["prompt_tokens"]) for r in ledger.totals(["model"], where={"key": "k1"})] == [
        ("m1", 10),
        ("m2", 20),
    ]
    assert ledger.totals(["model"], where={"key": "k3"}) == []
    with pytest.raises(ValueError):
        ledger.totals(["swarm"])
    with pytest.raises(ValueError):
        ledger.totals(["key"], where={"swarm": "s"})
    with pytest.raises(ValueError, match="expected values for"):
        ledger.add(1.0, ("k1",), spent(1))


def test_since_counts_the_bucket_it_falls_in_and_later_ones(monkeypatch):
    now = 100 * DAY
    monkeypatch.setattr("models._private.core.usage.time.time", lambda: now)
    ledger = UsageLedger(("model",))
    ledger.add(now - 3600, ("m",), spent(1))
    ledger.add(now - 90, ("m",), spent(2))
    ledger.add(now - 30, ("m",), spent(4))
    assert ledger.totals(since=now - 60)[0]["prompt_tokens"] == 4
    assert ledger.totals(since=now - 100)[0]["prompt_tokens"] == 6  # the minute of now-100 counts
    assert ledger.totals(since=now + 60) == []


def test_old_buckets_widen_so_a_long_ledger_stays_small_and_keeps_its_sums():
    now = 400 * DAY
    ledger = UsageLedger(("model",))
    for minute in range(0, 3 * DAY, 60):  # three days of a request a minute
        ledger.add(now - minute, ("m",), spent(1))
    for day in range(40, 100):
        ledger.add(now - day * DAY, ("m",), spent(1))
    before = ledger.totals()
    ledger.roll(now)
    assert ledger.totals() == before
    # A day of minutes, 30 days of hours (only 2 with use), then a bucket a day.
    assert len(ledger.buckets) < 1440 + 48 + 60 + 3
    widths = sorted({start % DAY for start, _ in ledger.buckets if now - start > 31 * DAY})
    assert widths == [0]  # older than 31 days: whole days


def test_dump_and_load_round_trip():
    ledger = UsageLedger(("key", "model"))
    ledger.add(1000.0, ("k", "m"), spent(5, 2))
    again = UsageLedger(("key", "model"))
    again.load(ledger.dump())
    assert again.totals(["key", "model"]) == ledger.totals(["key", "model"])


def result(n, tokens, cap="llm.generate"):
    return TaskResult(
        task_id=f"s:{n}",
        capability=cap,
        status=TaskStatus.SUCCEEDED,
        timings=Timings(submitted_at=1000.0, started_at=1001.0, finished_at=1002.0),
        usage=spent(tokens, tokens),
    )


def book_of(entries):
    book = TaskBook("s", keep_results=100)
    book.replay(entries, {"llm.generate"})
    return book


def test_a_queens_ledger_counts_each_task_once_across_replay_and_compaction():
    t = [Task(id=f"s:{n}", capability="llm.generate") for n in range(4)]
    journal = [acc_entry(t[0]), fin_entry(result(0, 10)), acc_entry(t[1]), fin_entry(result(1, 20))]
    # A task handed to another swarm is counted there, not here.
    journal += [
        acc_entry(t[2]),
        del_entry("s:2", ("other", "other:2")),
        fin_entry(result(2, 99), ledger=False),
    ]
    book = book_of(journal)
    assert book.usage.totals()[0]["prompt_tokens"] == 30

    # Compaction while task 3's result is being journaled: its fin follows in the new generation.
    book.records["s:3"] = book.accept(t[3], TaskStatus.RUNNING)
    book.records["s:3"].final = result(3, 40)
    compacted = book.live_entries()
    again = book_of([*compacted, fin_entry(result(3, 40))])
    assert again.usage.totals()[0]["prompt_tokens"] == 30 + 40
    # The next compaction keeps the sums, and its settled results are not counted again.
    assert book_of(again.live_entries()).usage.totals() == again.usage.totals()


def test_a_result_being_journaled_during_compaction_is_counted_once_even_with_few_results_kept():
    # keep_results 2: the compacted base holds two settled results and the one being written;
    # its own fin entry, after the base, must still find its record.
    book = TaskBook("s", keep_results=2)
    tasks = [Task(id=f"s:{n}", capability="llm.generate") for n in range(3)]
    book.records["s:0"] = book.accept(tasks[0], TaskStatus.RUNNING)
    book.records["s:0"].final = result(0, 40)  # accepted first, still being written
    for n in (1, 2):
        book.settle(book.accept(tasks[n], TaskStatus.RUNNING), result(n, 10))
    again = TaskBook("s", keep_results=2)
    again.replay([*book.live_entries(), fin_entry(result(0, 40))], {"llm.generate"})
    assert again.usage.totals()[0]["prompt_tokens"] == 10 + 10 + 40
