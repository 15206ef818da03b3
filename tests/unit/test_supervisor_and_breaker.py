from actors import SupervisionConfig
from actors._private.queen.supervisor import FAILED, RUNNING, Supervisor
from models import CircuitBreakerConfig
from models._private.core.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def supervisor(strategy="one_for_one", max_restarts=3, period_s=10):
    clock = Clock()
    return Supervisor(
        SupervisionConfig(strategy=strategy, max_restarts=max_restarts, period_s=period_s), clock
    ), clock


def test_one_for_one_restarts_only_the_failed_child():
    sup, _ = supervisor("one_for_one")
    assert sup.victims("b", ["a", "b", "c"]) == ["b"]


def test_one_for_all_restarts_every_child():
    sup, _ = supervisor("one_for_all")
    assert sup.victims("b", ["a", "b", "c"]) == ["a", "b", "c"]


def test_rest_for_one_restarts_the_child_and_those_started_after_it():
    sup, _ = supervisor("rest_for_one")
    assert sup.victims("b", ["a", "b", "c"]) == ["b", "c"]
    assert sup.victims("a", ["a", "b", "c"]) == ["a", "b", "c"]


def test_intensity_counts_restarts_in_a_sliding_window():
    sup, clock = supervisor(max_restarts=3, period_s=10)
    assert all(sup.allow_restart() for _ in range(3))
    clock.t += 10.5  # the first three fall out of the window
    assert all(sup.allow_restart() for _ in range(3))
    assert not sup.allow_restart()  # a fourth within 10 s


def test_escalation_says_why_and_recovery_clears_the_window():
    sup, _ = supervisor(max_restarts=1, period_s=60)
    sup.allow_restart()
    assert not sup.allow_restart()
    reason = sup.escalate("h3: no answer to ping")
    assert sup.state == FAILED
    assert reason.startswith("restart intensity exceeded: 2 restarts within 60 s (max_restarts 1)")
    assert reason.endswith("last failure: h3: no answer to ping")
    sup.recover()
    assert sup.state == RUNNING and sup.describe()["restarts_in_window"] == 0
    assert sup.describe()["total_restarts"] == 2


def breaker(threshold=2, cooldown_s=5):
    clock = Clock()
    return CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=threshold, cooldown_s=cooldown_s), clock
    ), clock


def test_breaker_opens_after_consecutive_failures():
    b, _ = breaker(threshold=2)
    b.failure()
    assert b.state == CLOSED and b.allow()
    b.success()
    b.failure()
    assert b.state == CLOSED  # the success in between reset the count
    b.failure()
    assert b.state == OPEN and not b.allow()


def test_breaker_half_opens_after_the_cooldown_and_lets_one_probe_through():
    b, clock = breaker(threshold=1, cooldown_s=5)
    b.failure()
    clock.t += 5
    assert b.state == HALF_OPEN
    assert b.allow() and not b.allow()  # one probe at a time
    b.success()
    assert b.state == CLOSED and b.allow()


def test_a_failed_probe_opens_the_breaker_again():
    b, clock = breaker(threshold=3, cooldown_s=5)
    for _ in range(3):
        b.failure()
    clock.t += 6
    assert b.allow()
    b.failure()
    assert b.state == OPEN
    clock.t += 4.9
    assert not b.allow()
    clock.t += 0.2
    assert b.allow()


def test_an_abandoned_probe_lets_the_next_call_probe():
    b, clock = breaker(threshold=1, cooldown_s=5)
    b.failure()
    clock.t += 5
    assert b.allow() and not b.allow()
    b.abandon()  # e.g. the client went away mid-probe
    assert b.state == HALF_OPEN and b.allow()


def test_a_success_of_a_call_begun_before_the_breaker_opened_leaves_it_open():
    clock = Clock()
    breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=1, cooldown_s=5), clock)
    begun = clock()
    clock.t += 1
    breaker.failure()  # opens while the slow call is still out
    clock.t += 1
    breaker.success(since=begun)  # stale: says nothing about the backend now
    assert breaker.state == OPEN
    clock.t += 5
    assert breaker.allow()  # the probe
    breaker.success(since=clock())
    assert breaker.state == CLOSED
