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

    def _acquire(self, key_id, counter, n):
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
