"""A request's reservation against its key's token and cost limits: the worst case taken
before the work (`reserve`), the difference given back or charged after (`settle`), everything
given back when the work fails, and kept when the client leaves while it runs
(`refunded_on_failure`)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from models._private.core.errors import Limited
from serve._private.auth.key_table import key_of, key_table_of

__all__ = ["Taken", "refunded_on_failure", "reserve", "settle", "token_limited"]

T = TypeVar("T")


Taken = list[tuple[str, int | None, int]]  # (counter, window, units) a request holds


def _units(counter: str, tokens: int, cost_microusd: int) -> int:
    return cost_microusd if counter == "cost" else tokens


async def reserve(request: Any, service: str, tokens: int, cost_microusd: int = 0) -> Taken:
    """Takes a request's worst case, `tokens` from its key's tokens per minute and token
    budget and `cost_microusd` from its cost budget (nothing when auth is off or the key has no
    such limits); raises Limited."""
    record = key_of(request)
    table = key_table_of(service)
    taken: Taken = []
    if record is None or table is None:
        return taken
    try:
        for counter in ("tokens", "budget", "cost"):
            n = _units(counter, tokens, cost_microusd)
            taken.append((counter, await table.spender.take(record, counter, n), n))
    except Limited:
        await settle(request, service, taken)
        raise
    return taken


async def settle(request: Any, service: str, taken: Taken, tokens: int = 0, cost_microusd: int = 0) -> None:
    """Gives back what a request took beyond the `tokens` and cost it really used, and charges
    what it used beyond them."""
    if not taken:  # auth off, or a key without token or cost limits
        return
    record = key_of(request)
    spender = key_table_of(service).spender
    for counter, window, units in taken:
        used = _units(counter, tokens, cost_microusd)
        await spender.give_back(record, counter, window, units - min(used, units))
        await spender.overrun(record, counter, used - units)


async def refunded_on_failure(request: Any, service: str, taken: Taken, work: Awaitable[T]) -> T:
    """`work`'s result; if it raises, everything `taken` goes back first. If it is cancelled
    (the client left), what was taken stays charged: the backend may have done the work, and
    the caller puts it in the usage ledger."""
    try:
        return await work
    except Exception:
        await settle(request, service, taken)
        raise


def token_limited(request: Any) -> bool:
    """Whether the request's key limits tokens or cost, so a request needs a worst case."""
    record = key_of(request)
    return record is not None and any(
        v is not None for v in (record.tpm, record.budget_tokens, record.budget_usd)
    )
