"""Replicas' leases against one ledger: however requests interleave, exactly the limit is
admitted. The authority is a fake that answers in a later turn of the loop (as a remote call
would); the ledger behind it is the real one."""

import asyncio
import random

import pytest

from models._private.core.errors import Limited
from serve._private.auth.keys import KeyRecord
from serve._private.auth.leases import Spender
from serve._private.auth.quota import Ledger, limit_of, period_of


class _Method:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        async def later():
            await asyncio.sleep(random.random() / 1000)  # other requests run meanwhile
            return self.fn(*args)

        return later()


class FakeAuthority:
    def __init__(self, record: KeyRecord, clock):
        self.ledger, self.record, self.clock = Ledger(), record, clock
        self.acquire = _Method(self._acquire)
        self.release = _Method(self.ledger.release)

    def _acquire(self, key_id, counter, n, force=False, stale=None):
        if stale:
            self.ledger.release(key_id, counter, *stale)
        limit, period = limit_of(self.record, counter), period_of(self.record, counter)
        return vars(self.ledger.acquire(key_id, counter, limit, period, n, self.clock()))


def key(**limits):
    return KeyRecord(id="k", name="t", hash="0" * 64, hint="x", scopes=["admin"], created_at=0.0, **limits)


@pytest.mark.parametrize("seed", range(5))
def test_two_replicas_admit_exactly_the_rpm_however_requests_interleave(seed):
    random.seed(seed)
    record = key(rpm=100)
    authority = FakeAuthority(record, clock=lambda: 30.0)
    replicas = [Spender(authority), Spender(authority)]

    async def one(i):
        try:
            await replicas[i % 2].take(record, "requests", 1)
            return True
        except Limited:
            return False

    async def run():
        return await asyncio.gather(*(one(i) for i in range(250)))

    assert sum(asyncio.run(run())) == 100


@pytest.mark.parametrize("seed", range(5))
def test_a_budget_with_worst_cases_settled_admits_what_the_real_costs_allow(seed):
    """Each request reserves 30 and costs 20: 1,000 tokens admit 50 requests in all, sent in
    waves so that settled units are spent again."""
    random.seed(seed)
    record = key(budget_tokens=1000, budget_period_s=86400.0)
    authority = FakeAuthority(record, clock=lambda: 30.0)
    replicas = [Spender(authority), Spender(authority)]

    async def one(i):
        spender = replicas[i % 2]
        try:
            window = await spender.take(record, "budget", 30)
        except Limited:
            return False
        await asyncio.sleep(random.random() / 1000)  # the model runs
        await spender.give_back(record, "budget", window, 10)
        return True

    async def run():
        admitted = 0
        for wave in range(20):
            admitted += sum(await asyncio.gather(*(one(wave * 10 + i) for i in range(10))))
        return admitted

    admitted = asyncio.run(run())
    spent = authority.ledger.used("k", "budget", 0)
    held = sum(s.leases[("k", "budget")].free for s in replicas)
    assert spent - held == 20 * admitted <= 1000  # never more than the budget
    assert admitted >= 48  # and near all of it: the last reservations need 30 of the 20s left


class _Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


class _Calls:
    """The real KeyAuthority's methods called as a replica calls the actor: `.remote(...)`,
    answered in a later turn of the loop. `lose_releases` drops every release on the way, the
    ones an ask carries too (as when the replica dies holding its leases)."""

    def __init__(self, authority, lose_releases: bool = False):
        async def acquire(key_id, counter, n, force=False, stale=None):
            await asyncio.sleep(0)
            return await authority.acquire(key_id, counter, n, force, None if lose_releases else stale)

        async def release(*args):
            await asyncio.sleep(0)
            if not lose_releases:
                authority.release(*args)

        self.acquire, self.release = _Remote(acquire), _Remote(release)


class _Remote:
    def __init__(self, fn):
        self.remote = fn


def _authority_with_key(tmp_path, clock, **limits):
    """The real KeyAuthority (journals on disk, the fake clock) and a key it made."""
    from serve._private.auth.authority import KeyAuthority
    from serve._private.auth.config import AuthConfig

    authority = KeyAuthority(str(tmp_path / "auth"), AuthConfig(path=str(tmp_path)).model_dump(), clock=clock)
    made = authority.create({"name": "r", "scopes": ["ai:invoke"], **limits})
    return authority, authority.keys[made["record"]["id"]]


def _steady_then_burst(tmp_path, lose_releases=False):
    """One replica, one request a second for five minutes at a limit of 100 a minute, then
    bursts of 150 requests at once every 7 s for two minutes. Returns the admitted times and
    the steady requests refused (as (t, Retry-After))."""
    clock = _Clock(1_000_000.0)
    authority, record = _authority_with_key(tmp_path, clock, rpm=100)
    spender = Spender(_Calls(authority, lose_releases), clock=clock)
    admitted, refused = [], []

    async def request(t):
        clock.now = 1_000_000.0 + t
        try:
            await spender.take(record, "requests", 1)
            admitted.append(t)
            return True
        except Limited as e:
            refused.append((t, e.retry_after_s))
            return False

    async def run():
        for second in range(300):
            await request(second + 0.37)
        steady = len(admitted)
        for t in range(301, 421, 7):
            await asyncio.gather(*(request(t + 0.41) for _ in range(150)))
        return steady

    return run(), admitted, refused


def _busiest_minute(admitted):
    return max(sum(1 for t in admitted if start <= t < start + 60.0) for start in admitted)


def test_one_request_a_second_under_a_limit_of_100_a_minute_is_always_admitted_and_no_minute_holds_more(
    tmp_path,
):
    """A lease lasts to the end of its slot; one replaced by a lease of a later slot gives its
    unspent units back, or they would count a whole minute with nothing spent: a steady 60 a
    minute was refused from t=36 s against 100."""
    run, admitted, refused = _steady_then_burst(tmp_path)
    steady = asyncio.run(run)
    assert [r for r in refused if r[0] < 300] == []
    assert steady == 300
    assert _busiest_minute(admitted) <= 100  # the sliding guarantee, bursts after steady use included
    # Right after steady use, exactly what the window left: slots 241..301 count the 59 steady
    # requests of 241.37..299.37, so no unspent unit of an old lease is still counted.
    assert sum(1 for t in admitted if 301 < t < 302) == 100 - 59


def test_a_lost_release_leaves_its_units_counted_and_never_admits_more(tmp_path):
    """A release that never arrives (or a replica that dies holding a lease) strands units until
    they age out: fewer admitted, never more than the limit in any minute."""
    run, admitted, _ = _steady_then_burst(tmp_path, lose_releases=True)
    asyncio.run(run)
    assert _busiest_minute(admitted) <= 100


def test_a_lease_replaced_before_its_end_by_one_of_a_later_slot_gives_its_rest_back(tmp_path):
    """An ask that leaves while the lease still runs (it holds too little) and is answered in the
    next slot: the old lease cannot be spent any more, and what it held is released."""
    clock = _Clock(1_000_020.5)
    authority, record = _authority_with_key(tmp_path, clock, tpm=1000)
    calls = _Calls(authority)
    slow = calls.acquire.remote

    async def answered_in_the_next_slot(*args):
        clock.now = 1_000_021.1  # the authority answers after the slot turned
        return await slow(*args)

    async def run():
        spender = Spender(calls, clock=clock)
        first = await spender.take(record, "tokens", 30)  # a lease of 50: 20 left to spend
        assert spender.leases[(record.id, "tokens")].free == 20
        calls.acquire.remote = answered_in_the_next_slot
        clock.now = 1_000_020.6  # still within the lease, but 20 < 30: ask
        second = await spender.take(record, "tokens", 30)
        return first, second

    first, second = asyncio.run(run())
    assert second == first + 1
    assert authority.ledger.used(record.id, "tokens", first) == 30  # the 20 left were given back
