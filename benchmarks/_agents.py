"""Agents the benchmarks (and the chaos tests) run: they measure the runtime, not the agents."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict

from actors import Agent, Task

__all__ = ["CheckAgent", "NonceAgent", "NoopAgent"]


class NoopAgent(Agent):
    """Returns None at once; for measuring the runtime's own overhead."""

    capabilities = ("bench.noop",)

    async def handle(self, task: Task) -> Any:
        return None


class NoArguments(BaseModel):
    """A payload with no fields: a tool call's arguments are `{}` and nothing else."""

    model_config = ConfigDict(extra="forbid")


class CheckAgent(Agent):
    """`bench.check`: takes no arguments and returns None at once. As a model's tool, its
    schema admits only `{}`, so a call constrained by it is a few tokens long (a bare object
    schema would let the model write arguments until its token limit)."""

    capabilities = ("bench.check",)
    payloads = {"bench.check": NoArguments}

    async def handle(self, task: Task) -> Any:
        return None


class NonceAgent(Agent):
    """`bench.nonce`: waits `payload.s` seconds, then returns a fresh random nonce.

    Two runs of one task never return the same output, so a chaos test can tell a task's
    result that changed (a duplicate result) from one recorded once.
    """

    capabilities = ("bench.nonce",)

    async def handle(self, task: Task) -> dict:
        await asyncio.sleep(float(task.payload.get("s", 0)))
        return {"nonce": uuid.uuid4().hex, "agent": self.context.agent_id}
