"""What the /mcp endpoint puts in the system's usage ledger (the key authority), as the AI
service does: each MCP request is one request of its key, under the model name `USAGE_MODEL`, so
that `swarm usage` shows MCP calls per key beside the AI service's."""

from __future__ import annotations

from models._private.core.usage import Spent
from serve._private.auth.usage_batches import UsageBatches

__all__ = ["USAGE_MODEL", "McpUsage"]

# One name for every MCP request: bounded (a tool name is the caller's to choose, even one that
# does not exist, and would grow the ledger without end).
USAGE_MODEL = "mcp"
_ONE_REQUEST = Spent(requests=1)


class McpUsage(UsageBatches):
    """Counts a replica's MCP requests per key; sent to the ledger in batches (`UsageBatches`).

    Args:
        system: The system's Ray namespace (its key authority holds the ledger).
    """

    def count(self, key_id: str) -> None:
        """One MCP request of the key `key_id`."""
        self.add(key_id, USAGE_MODEL, _ONE_REQUEST)
