"""The ledger behind per-key limits: never more than the limit, leases while there is room."""

from models._private.quota import Ledger


def test_the_ledger_never_grants_more_than_the_limit_and_leases_while_far_from_it():
    ledger = Ledger(lease_share=0.1, tight_share=0.2)
    first = ledger.acquire("k", "requests", 100, 60.0, 1, now=0.0)
    assert (first.units, first.tight) == (10, False)  # a lease: 9 to spend locally
    granted = first.units
    while (g := ledger.acquire("k", "requests", 100, 60.0, 1, now=1.0)).units:
        granted += g.units
        if g.tight:
            assert g.units == 1  # near the limit only what is asked
    assert granted == 100 and g.retry_after_s == 59.0


def test_units_given_back_can_be_granted_again_in_their_window_only():
    ledger = Ledger(lease_share=0.0, tight_share=0.0)
    assert ledger.acquire("k", "budget", 10, 60.0, 10, now=0.0).units == 10
    assert ledger.acquire("k", "budget", 10, 60.0, 1, now=0.0).units == 0
    ledger.release("k", "budget", 0, 4)
    assert ledger.acquire("k", "budget", 10, 60.0, 4, now=0.0).units == 4
    assert ledger.acquire("k", "budget", 10, 60.0, 10, now=60.0).units == 10  # a new window
    ledger.release("k", "budget", 0, 10)  # the old window is gone: nothing comes back
    assert ledger.used("k", "budget", 1) == 10


def test_keys_and_counters_are_counted_apart():
    ledger = Ledger(lease_share=0.0)
    assert ledger.acquire("a", "requests", 1, 60.0, 1, now=0.0).units == 1
    assert ledger.acquire("b", "requests", 1, 60.0, 1, now=0.0).units == 1
    assert ledger.acquire("a", "tokens", 5, 60.0, 5, now=0.0).units == 5
    assert ledger.acquire("a", "requests", 1, 60.0, 1, now=0.0).units == 0
