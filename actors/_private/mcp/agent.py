"""`McpToolAgent`: the agent that runs a task of a federated MCP tool by calling the federation
actor, so that `swarm submit`, delegation and the tool-using agent reach remote MCP tools."""

from __future__ import annotations

from typing import Any

import ray
from ray.exceptions import RayTaskError

from actors._private.agents.agent import Agent
from actors._private.task import Task
from models._private.core import names
from models._private.core.errors import PayloadError
from models._private.core.retry import unwrap_error

__all__ = ["McpToolAgent"]


class McpToolAgent(Agent):
    """Calls a federated MCP tool: the task's capability names it, its payload is the arguments.

    Its capabilities come from the pool's config, as families (`mcp.everything.*`). The output
    is the tool's CallToolResult JSON (`content`, `structuredContent`, `isError`); a result with
    `isError` is an output (the tool ran and said no), not a failed task. An unknown or held-back
    tool fails the task at once (a `PayloadError`); an upstream failure or deadline fails the
    attempt, which the queen retries (the federation answers a retried read-only call anew, and
    repeats its first answer to a call that may not run twice: the task id is its request id).

    Args:
        call_timeout_s: the deadline of one call, default the upstream's `timeout_s` (a task's
            own `timeout_s` bounds it too).
    """

    def __init__(self, call_timeout_s: float | None = None):
        self.call_timeout_s = call_timeout_s
        self._federation: Any = None

    def _actor(self) -> Any:
        if self._federation is None:
            namespace = (
                getattr(self.context.tasks, "ray_namespace", None) if hasattr(self, "context") else None
            )
            self._federation = ray.get_actor(names.MCP_FEDERATION, namespace=namespace)
        return self._federation

    async def handle(self, task: Task) -> Any:
        if not isinstance(task.payload, dict):
            raise PayloadError(task.capability, [("", "the arguments of an MCP tool are a JSON object")])
        bounds = [t for t in (self.call_timeout_s, task.timeout_s) if t]
        deadline_s = min(bounds) if bounds else None
        try:
            return await self._actor().call.remote(task.capability, task.payload, deadline_s, task.id)
        except RayTaskError as e:
            raise unwrap_error(e) from None

    @classmethod
    async def catalog_entries(
        cls, params: dict[str, Any], family: str, namespace: str
    ) -> list[dict[str, Any]]:
        """The federation's approved tools of `family` ('prefix.*') as catalog entries; `namespace`
        is the system's Ray namespace (the queen's, which may not be the caller's job's)."""
        federation = ray.get_actor(names.MCP_FEDERATION, namespace=namespace)
        try:
            return await federation.catalog.remote(family)
        except RayTaskError as e:
            raise unwrap_error(e) from None
