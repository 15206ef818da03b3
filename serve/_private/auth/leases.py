"""This replica's leases of each key's limits: units it may spend without asking the key
authority, taken in batches from the authority's windows (`quota` has the scheme)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from models._private.core.errors import Limited
from serve._private.auth.keys import KeyRecord
from serve._private.auth.quota import limit_of

__all__ = ["Spender"]

log = logging.getLogger("swarmray.serve")


_SKEW_S = 0.25  # a local lease is spent only until this long before its slot ends


class _Lease:
    def __init__(self, window: int, end: float, free: int, tight: bool):
        self.window, self.end, self.free, self.tight = window, end, free, tight


class Spender:
    """This replica's leases of each key's limits (`quota` has the scheme).

    `take` returns the window its units came from, for `give_back` after the request.
    """

    def __init__(self, authority: Any, clock: Callable[[], float] = time.time):
        self.authority, self.clock = authority, clock
        self.leases: dict[tuple[str, str], _Lease] = {}
        self._asking: dict[tuple[str, str], asyncio.Lock] = {}

    def _local(self, slot: tuple[str, str], n: int) -> int | None:
        lease = self.leases.get(slot)
        if lease is not None and not lease.tight and lease.free >= n and self.clock() < lease.end:
            lease.free -= n
            return lease.window
        return None

    async def take(self, record: KeyRecord, counter: str, n: int) -> int | None:
        """Spends `n` units, from the local lease or the authority; raises Limited."""
        if n <= 0 or limit_of(record, counter) is None:
            return None  # no such limit on this key, or nothing to spend
        slot = (record.id, counter)
        if (window := self._local(slot, n)) is not None:
            return window
        # One request of this key asks the authority at a time; the others wait and spend the
        # lease it brings. Otherwise a burst would lease once per request, and the surplus it
        # strands on one replica could be refused on another.
        async with self._asking.setdefault(slot, asyncio.Lock()):
            if (window := self._local(slot, n)) is not None:
                return window
            return await self._ask(record, counter, n)

    async def _ask(self, record: KeyRecord, counter: str, n: int) -> int:
        # A lease whose slot has ended can no longer be spent: its unspent units go back with
        # the ask (released before the grant), or they would count a whole period unspent. Taken
        # out of the lease first, so they are handed back once; lost with the call, they stay
        # counted until they age out (fewer admitted, never more).
        expired, stale = self.leases.get((record.id, counter)), None
        if expired is not None and expired.free and self.clock() >= expired.end:
            stale, expired.free = [expired.window, expired.free], 0
        grant = await self.authority.acquire.remote(record.id, counter, n, False, stale)
        if not grant["units"]:
            raise Limited(counter, grant["retry_after_s"])
        end = self.clock() + grant["lease_s"] - _SKEW_S
        # Re-read after the await: other requests may have spent from or replaced the lease.
        current = self.leases.get((record.id, counter))
        same = current is not None and current.window == grant["window"]
        carried = current.free if same else 0
        free = grant["units"] - n + carried
        tight = grant["tight"]
        self.leases[(record.id, counter)] = _Lease(grant["window"], end, 0 if tight else free, tight)
        if current is not None and not same and current.free:  # replaced before it ended: unspendable now
            await self.authority.release.remote(record.id, counter, current.window, current.free)
        if tight and free:  # exact from now on: hand back what this replica holds
            await self.authority.release.remote(record.id, counter, grant["window"], free)
        return grant["window"]

    async def overrun(self, record: KeyRecord, counter: str, n: int) -> None:
        """Spends `n` units a request used beyond its reservation, over the limit if need be:
        what was used is charged, never forgiven."""
        if n <= 0 or limit_of(record, counter) is None or self._local((record.id, counter), n) is not None:
            return
        log.warning("key %s used %d %s units beyond its reservation", record.id, n, counter)
        await self.authority.acquire.remote(record.id, counter, n, True)

    async def give_back(self, record: KeyRecord, counter: str, window: int | None, n: int) -> None:
        """Units taken for a worst case and not used (or a request that failed)."""
        if window is None or n <= 0:
            return
        lease = self.leases.get((record.id, counter))
        if lease is not None and lease.window == window and not lease.tight and self.clock() < lease.end:
            lease.free += n
        else:
            await self.authority.release.remote(record.id, counter, window, n)
