import random

from actors._private.queen.task_queue import TaskQueue


def drain(q, cap):
    out = []
    while (tid := q.pop(cap)) is not None:
        out.append(tid)
    return out


def assert_counts_match(q, caps):
    """Every count equals what is really waiting, as pop would hand it out."""
    for cap in caps:
        assert q.depth(cap) == len(q.waiting(cap))
    assert len(q) == sum(len(q.waiting(cap)) for cap in caps)
    assert q.depths() == {cap: len(q.waiting(cap)) for cap in sorted(caps) if q.waiting(cap)}


def test_higher_priority_pops_first_and_equal_priorities_pop_in_push_order():
    q = TaskQueue()
    for tid, prio in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1), ("f", 0)]:
        q.push(tid, "cap", prio)
    assert q.waiting("cap") == ["b", "d", "a", "c", "f", "e"]
    assert drain(q, "cap") == ["b", "d", "a", "c", "f", "e"]
    assert len(q) == 0 and q.depth("cap") == 0


def test_each_capability_has_its_own_queue():
    q = TaskQueue()
    q.push("x1", "x", 0)
    q.push("y1", "y", 9)
    q.push("x2", "x", 1)
    assert q.pop("x") == "x2"
    assert q.depths() == {"x": 1, "y": 1}
    assert q.pop("y") == "y1" and q.pop("y") is None
    assert q.pop("unknown") is None


def test_a_removed_task_is_skipped_when_it_reaches_the_top():
    q = TaskQueue()
    for tid in "abc":
        q.push(tid, "cap")
    assert q.remove("a") is True
    assert "a" not in q and len(q) == 2 and q.depth("cap") == 2
    assert drain(q, "cap") == ["b", "c"]


def test_removing_a_task_that_is_not_waiting_changes_no_count():
    q = TaskQueue()
    q.push("a", "cap")
    q.push("b", "cap")
    assert q.pop("cap") == "a"
    assert q.remove("a") is False  # already handed out, e.g. cancelled as its attempt starts
    assert q.remove("b") is True
    assert q.remove("b") is False  # removed twice counts once
    assert q.remove("never") is False
    assert len(q) == 0 and q.depth("cap") == 0 and q.depths() == {}


def test_pushing_a_waiting_task_again_moves_it_without_counting_it_twice():
    q = TaskQueue()
    q.push("a", "cap", 0)
    q.push("b", "cap", 0)
    q.push("a", "cap", 0)  # behind b now, and only once
    assert len(q) == 2 and q.depth("cap") == 2
    assert drain(q, "cap") == ["b", "a"]


def test_a_task_removed_then_pushed_again_pops_once():
    q = TaskQueue()
    q.push("a", "cap", 3)
    q.remove("a")
    q.push("a", "cap", 0)  # a retry: its stale entry of priority 3 must not pop too
    q.push("b", "cap", 0)
    assert drain(q, "cap") == ["a", "b"]
    assert len(q) == 0


def test_counts_equal_the_waiting_tasks_through_random_pushes_pops_and_removals():
    rng = random.Random(3)
    caps = ["x", "y", "z"]
    q = TaskQueue()
    model: dict[str, list[tuple[int, int, str]]] = {c: [] for c in caps}  # (-prio, order, id)
    order = 0
    for step in range(2000):
        op = rng.random()
        if op < 0.5:
            tid, cap, prio = f"t{step}", rng.choice(caps), rng.randint(-2, 2)
            q.push(tid, cap, prio)
            model[cap].append((-prio, order, tid))
            order += 1
        elif op < 0.8:
            cap = rng.choice(caps)
            expected = min(model[cap])[2] if model[cap] else None
            assert q.pop(cap) == expected
            if expected is not None:
                model[cap].remove(min(model[cap]))
        else:
            live = [e for c in caps for e in model[c]]
            if live:
                _, _, tid = rng.choice(live)
                assert q.remove(tid) is True
                for c in caps:
                    model[c] = [e for e in model[c] if e[2] != tid]
        assert_counts_match(q, caps)
        assert len(q) == sum(len(m) for m in model.values())
    for cap in caps:
        assert drain(q, cap) == [tid for _, _, tid in sorted(model[cap])]
