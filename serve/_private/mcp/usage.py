"""What the /mcp endpoint puts in the system's usage ledger (the key authority), as the AI
service does: each MCP request is one request of its key, under the model name `USAGE_MODEL`, so
that `swarm usage` shows MCP calls per key beside the AI service's. A replica sends its counts
every USAGE_FLUSH_S as one batch with an id (a batch sent again counts once)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from models._private.core.retry import unwrap_error
from models._private.core.usage import Spent

__all__ = ["USAGE_FLUSH_S", "USAGE_MODEL", "McpUsage"]

log = logging.getLogger("swarmray.serve")

USAGE_FLUSH_S = 1.0  # how often a replica sends its counts to the ledger
# One name for every MCP request: bounded (a tool name is the caller's to choose, even one that
# does not exist, and would grow the ledger without end).
USAGE_MODEL = "mcp"


class McpUsage:
    """Counts a replica's MCP requests per key and sends them to the ledger in the background.

    Args:
        system: The system's Ray namespace (its key authority holds the ledger).
    """

    def __init__(self, system: str):
        self.system = system
        self._unsent: dict[str, int] = {}
        self._outgoing: dict[str, Any] | None = None
        self._ledger: Any = None
        self._flusher: asyncio.Task | None = None
        self._sending = asyncio.Lock()

    def count(self, key_id: str) -> None:
        """One MCP request of the key `key_id`."""
        self._unsent[key_id] = self._unsent.get(key_id, 0) + 1
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._unsent or self._outgoing is not None:
            await asyncio.sleep(USAGE_FLUSH_S)
            await self.send()

    async def send(self) -> None:
        """Sends what is unsent as one batch (or the batch that did not arrive, again)."""
        async with self._sending:
            if self._outgoing is None and self._unsent:
                rows = [[k, USAGE_MODEL, Spent(requests=n).model_dump()] for k, n in self._unsent.items()]
                self._outgoing, self._unsent = {"id": uuid.uuid4().hex, "at": time.time(), "rows": rows}, {}
            if self._outgoing is None:
                return
            try:
                await (await self._the_ledger()).record_usage.remote(self._outgoing)
                self._outgoing = None
            except Exception as e:
                self._ledger = None
                log.warning("the usage ledger did not take a batch (%r); sending it again", unwrap_error(e))

    async def _the_ledger(self) -> Any:
        if self._ledger is None:  # looked up once, off the loop (it asks Ray's control store)
            from ray import get_actor

            from models._private.core.names import authority_name

            self._ledger = await asyncio.to_thread(
                get_actor, authority_name(self.system), namespace=self.system
            )
        return self._ledger
