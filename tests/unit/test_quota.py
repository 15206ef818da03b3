"""The ledger behind per-key limits: never more than the limit, leases while there is room."""

import pytest
from pydantic import ValidationError

from serve import AIServiceConfig, PriceConfig
from serve._private.auth.keys import KeyRecord
from serve._private.auth.quota import SLOTS, Ledger, limit_of, period_of


def test_the_ledger_never_grants_more_than_the_limit_and_leases_while_far_from_it():
    ledger = Ledger(lease_share=0.1, tight_share=0.2)
    first = ledger.acquire("k", "requests", 100, 60.0, 1, now=0.0)
    assert (first.units, first.tight) == (10, False)  # a lease: 9 to spend locally
    granted = first.units
    while (g := ledger.acquire("k", "requests", 100, 60.0, 1, now=1.0)).units:
        granted += g.units
        if g.tight:
            assert g.units == 1  # near the limit only what is asked
    assert granted == 100 and g.retry_after_s == 60.0  # the lease of t=0 counts until t=61


def test_units_given_back_can_be_granted_again_in_their_window_only():
    ledger = Ledger(lease_share=0.0, tight_share=0.0)
    assert ledger.acquire("k", "budget", 10, 60.0, 10, now=0.0).units == 10
    assert ledger.acquire("k", "budget", 10, 60.0, 1, now=0.0).units == 0
    ledger.release("k", "budget", 0, 4)
    assert ledger.acquire("k", "budget", 10, 60.0, 4, now=0.0).units == 4
    assert ledger.acquire("k", "budget", 10, 60.0, 1, now=60.0).units == 0  # t=0 counts a minute
    assert ledger.acquire("k", "budget", 10, 60.0, 10, now=61.0).units == 10  # and then no more
    ledger.release("k", "budget", 0, 10)  # its slot is gone: nothing comes back
    assert ledger.used("k", "budget", 61) == 10


def test_keys_and_counters_are_counted_apart():
    ledger = Ledger(lease_share=0.0)
    assert ledger.acquire("a", "requests", 1, 60.0, 1, now=0.0).units == 1
    assert ledger.acquire("b", "requests", 1, 60.0, 1, now=0.0).units == 1
    assert ledger.acquire("a", "tokens", 5, 60.0, 5, now=0.0).units == 5
    assert ledger.acquire("a", "requests", 1, 60.0, 1, now=0.0).units == 0


def test_a_cost_budget_counts_micro_dollars_over_its_period_a_day_by_default():
    record = KeyRecord(
        id="k", name="t", hash="0" * 64, hint="x", scopes=["ai:invoke"], created_at=0.0, budget_usd=1.25
    )
    assert limit_of(record, "cost") == 1_250_000 and limit_of(record, "budget") is None
    assert period_of(record, "cost") == 86400.0 and period_of(record, "requests") == 60.0


def test_prices_charge_micro_dollars_rounded_up_without_float_noise():
    price = PriceConfig(input_usd_per_million_tokens=0.1, output_usd_per_million_tokens=2.5)
    assert price.cost_microusd(10, 0) == 1  # 10 x 0.1 is 1.0000000000000002 in floats
    assert price.cost_microusd(3, 0) == 1  # a third of a micro-dollar is charged as one
    assert price.cost_microusd(1000, 400) == 100 + 1000
    assert PriceConfig().cost_microusd(10**6, 10**6) == 0


def test_prices_may_name_only_models_the_service_has():
    with pytest.raises(ValidationError, match="prices name unknown model"):
        AIServiceConfig(providers={"p": {"base_url": "http://x", "model": "m"}}, prices={"gpt-9": {}})
    config = AIServiceConfig(
        providers={"p": {"base_url": "http://x", "model": "m"}},
        prices={"p": {"output_usd_per_million_tokens": 4}, "all-MiniLM-L6-v2": {}},
    )
    assert config.price("p").output_usd_per_million_tokens == 4 and config.price("nothing") == PriceConfig()


def test_budgets_the_authority_granted_outlive_its_restart(tmp_path):
    import asyncio

    from serve._private.auth.authority import KeyAuthority
    from serve._private.auth.config import AuthConfig

    config = AuthConfig(path=str(tmp_path)).model_dump()
    authority = KeyAuthority(str(tmp_path / "auth"), config)
    spec = {"name": "b", "scopes": ["ai:invoke"], "budget_usd": 1.0, "budget_tokens": 100}
    key_id = authority.create(spec)["record"]["id"]
    assert asyncio.run(authority.acquire(key_id, "cost", 600_000))["units"] >= 600_000
    assert asyncio.run(authority.acquire(key_id, "budget", 60))["units"] >= 60
    again = KeyAuthority(str(tmp_path / "auth"), config)
    assert asyncio.run(again.acquire(key_id, "cost", 600_000))["units"] == 0
    assert asyncio.run(again.acquire(key_id, "budget", 60))["units"] == 0
    assert asyncio.run(again.acquire(key_id, "cost", 400_000))["units"] == 400_000


def test_a_request_larger_than_the_whole_limit_is_told_so_and_usage_found_later_is_charged():
    ledger = Ledger(lease_share=0.0)
    refused = ledger.acquire("k", "budget", 10, 60.0, 11, now=0.0)
    assert refused.units == 0 and refused.retry_after_s == float("inf")  # waiting cannot help
    assert ledger.acquire("k", "budget", 10, 60.0, 8, now=0.0).units == 8
    forced = ledger.acquire("k", "budget", 10, 60.0, 5, now=0.0, force=True)  # used beyond a reservation
    assert forced.units == 5 and ledger.used("k", "budget", 0) == 13
    assert ledger.acquire("k", "budget", 10, 60.0, 1, now=0.0).units == 0  # over: nothing more


def test_a_budget_is_never_exceeded_within_any_period_across_a_calendar_edge():
    """$X a day means at most X in any 24 hours: units spent just before midnight still count
    just after it, until a whole period (and at most one slot of it) has passed."""
    day = 86400.0
    ledger = Ledger(lease_share=0.0, tight_share=0.0)
    assert ledger.acquire("k", "cost", 100, day, 100, now=day - 1.0).units == 100  # just before midnight
    refused = ledger.acquire("k", "cost", 100, day, 1, now=day + 1.0)  # just after it
    assert refused.units == 0
    freed_at = day + 1.0 + refused.retry_after_s  # when the spending before midnight stops counting
    assert 2 * day - 1.0 <= freed_at <= 2 * day - 1.0 + day / SLOTS
    assert ledger.acquire("k", "cost", 100, day, 1, now=freed_at - 0.001).units == 0
    assert ledger.acquire("k", "cost", 100, day, 100, now=freed_at).units == 100


def test_a_minute_limit_is_never_exceeded_within_any_minute():
    ledger = Ledger(lease_share=0.0, tight_share=0.0)
    spent_at = []  # the time of each request admitted, one every 0.1 s from the middle of a minute
    for i in range(300, 3000):
        now = i / 10
        if ledger.acquire("k", "requests", 60, 60.0, 1, now=now).units:
            spent_at.append(now)
    assert len(spent_at) >= 60 * 4.5 * 60 / 61  # near the rate: a request counts 61 s at most
    busiest = max(sum(1 for t in spent_at if start <= t < start + 60.0) for start in spent_at)
    assert busiest == 60


class _Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rpm_and_tpm_leases_outlive_a_restart_of_the_authority(tmp_path):
    """A replica keeps its leases while the authority restarts: the restarted one counts them."""
    import asyncio

    from serve._private.auth.authority import KeyAuthority
    from serve._private.auth.config import AuthConfig

    config, clock = AuthConfig(path=str(tmp_path)).model_dump(), _Clock(1_000_000.0)
    authority = KeyAuthority(str(tmp_path / "auth"), config, clock=clock)
    spec = {"name": "r", "scopes": ["ai:invoke"], "rpm": 100, "tpm": 1000}
    key_id = authority.create(spec)["record"]["id"]

    async def take(authority, counter, n):
        return (await authority.acquire(key_id, counter, n))["units"]

    granted = asyncio.run(take(authority, "requests", 1))  # a lease of several
    while (units := asyncio.run(take(authority, "requests", 1))) > 0:
        granted += units
    assert granted == 100
    assert asyncio.run(take(authority, "tokens", 600)) >= 600
    clock.now += 5.0
    again = KeyAuthority(str(tmp_path / "auth"), config, clock=clock)
    assert asyncio.run(take(again, "requests", 1)) == 0
    assert asyncio.run(take(again, "tokens", 600)) == 0
    assert asyncio.run(take(again, "tokens", 400)) == 400
