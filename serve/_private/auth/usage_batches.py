"""How a service replica sends what it charged to the system's usage ledger (the key authority):
summed per (caller, model) in memory, then sent every USAGE_FLUSH_S as one batch with an id, so
that a batch sent again after a lost answer counts once. The AI service and the /mcp endpoint
both send through it."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from models._private.core.retry import unwrap_error
from models._private.core.usage import Spent

__all__ = ["USAGE_FLUSH_S", "UsageBatches"]

log = logging.getLogger("swarmray.serve")

USAGE_FLUSH_S = 1.0  # how often a replica sends what it charged to the system's ledger


class UsageBatches:
    """A replica's charges not yet in the ledger, and their sending in the background.

    Args:
        system: The system's Ray namespace, whose key authority holds the ledger.
    """

    def __init__(self, system: str):
        self.system = system
        self.unsent: dict[tuple[str, str], Spent] = {}  # (caller, model) -> charged, not yet sent
        self._outgoing: dict[str, Any] | None = None  # the batch being sent (and resent)
        self._ledger: Any = None  # the key authority's handle
        self._flusher: asyncio.Task | None = None
        self._sending = asyncio.Lock()  # one batch in flight: a reader of the ledger sends too

    @property
    def pending(self) -> bool:
        """Whether anything charged has not reached the ledger yet."""
        return bool(self.unsent) or self._outgoing is not None

    def add(self, caller: str, model: str, spent: Spent) -> None:
        """Charges `spent` to (caller, model); it is sent within USAGE_FLUSH_S."""
        self.unsent.setdefault((caller, model), Spent()).add(spent)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self.pending:
            await asyncio.sleep(USAGE_FLUSH_S)
            await self.send()

    async def send(self) -> None:
        """Sends what is unsent as one batch (or the batch that did not arrive, again)."""
        async with self._sending:
            if self._outgoing is None and self.unsent:
                rows = [[k, m, s.model_dump()] for (k, m), s in self.unsent.items()]
                self._outgoing, self.unsent = {"id": uuid.uuid4().hex, "at": time.time(), "rows": rows}, {}
            if self._outgoing is None:
                return
            try:
                await (await self.ledger()).record_usage.remote(self._outgoing)
                self._outgoing = None
            except Exception as e:
                self.forget_ledger()
                log.warning("the usage ledger did not take a batch (%r); sending it again", unwrap_error(e))

    async def ledger(self) -> Any:
        """The key authority's handle, looked up once, off the loop (it asks Ray's control store)."""
        if self._ledger is None:
            from ray import get_actor

            from models._private.core.names import authority_name

            where = authority_name(self.system)
            self._ledger = await asyncio.to_thread(get_actor, where, namespace=self.system)
        return self._ledger

    def forget_ledger(self) -> None:
        """Looks the authority up again next time (it did not answer: it may have moved)."""
        self._ledger = None

    async def close(self, timeout_s: float) -> None:
        """At a replica's shutdown: sends what is left, with one try of at most `timeout_s`."""
        if not self.pending:
            return
        if self._flusher is not None:
            self._flusher.cancel()  # a batch it was sending keeps its id: counted once
        try:
            await asyncio.wait_for(self.send(), timeout_s)
        except Exception as e:
            log.warning("usage not sent at shutdown: %r", e)
