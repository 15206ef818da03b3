"""The agent base class and the built-in `callable` kind."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel

from actors._private.task import Task
from models._private.core.config import import_object

__all__ = ["Agent", "AgentContext", "CallableAgent"]


@dataclass(frozen=True)
class AgentContext:
    """Who an agent is: set by its host before the first task."""

    agent_id: str
    swarm: str
    pool: str
    capabilities: tuple[str, ...]
    memory: Any = None  # a MemoryClient: the swarm's memory store and the global one
    tasks: Any = None  # a TaskClient: child tasks, the capability catalog, the task's steps


class Agent:
    """Base class of every agent.

    Subclass it, list `capabilities`, and implement `handle`. Declare each capability's payload
    as a pydantic model in `payloads`: the queen then refuses a task whose payload does not fit
    when it is submitted, naming the field, `swarm capabilities` shows the model's schema, and
    `handle` gets the checked payload with its defaults filled in. Say what each capability does
    in `descriptions` (`swarm capabilities` shows it; a pool's config may override it; without
    either, the first line of the class docstring stands in). Declare what a capability returns
    as a pydantic model in `outputs` (its JSON Schema is listed as the capability's
    `output_schema`, the MCP tool's `outputSchema`; the output is not checked against it) and MCP
    tool annotations in `annotations` (`{"text.stats": {"readOnlyHint": True}}`; a capability's
    config may override each). Raise `PayloadError` (or let a
    pydantic `ValidationError` out) for input that can never work: the task fails at once,
    without retries. Any other exception fails the attempt, which the queen retries. Constructor
    keyword arguments
    come from the pool's `agent.params` in the config. `handle` may be `async def` (runs on
    the host's event loop, for I/O-bound work) or plain `def` (runs in a worker thread, so
    CPU-bound work does not stall health pings).

    Example:
        class ShoutInput(BaseModel):
            text: str = Field(description="What to shout.")

        class Shout(Agent):
            capabilities = ("text.shout",)
            payloads = {"text.shout": ShoutInput}
            descriptions = {"text.shout": "The text in capitals."}

            async def handle(self, task):
                return task.payload["text"].upper()
    """

    capabilities: ClassVar[tuple[str, ...]] = ()
    payloads: ClassVar[Mapping[str, type[BaseModel]]] = {}
    descriptions: ClassVar[Mapping[str, str]] = {}
    outputs: ClassVar[Mapping[str, type[BaseModel]]] = {}
    annotations: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    context: AgentContext

    async def handle(self, task: Task) -> Any:
        """Runs one task and returns its output, which must be JSON; raise to fail the attempt."""
        raise NotImplementedError

    def snapshot(self) -> Any:
        """State (JSON) to carry over a restart of this agent; None keeps nothing."""
        return None

    def restore(self, state: Any) -> None:
        """Takes back the state `snapshot` returned before a restart."""


async def call_maybe_async(fn: Any, *args: Any, executor: Executor | None = None) -> Any:
    """Awaits `fn(*args)` if it is a coroutine function, else runs it in a thread of `executor`
    (default: the loop's).

    A thread cannot be stopped, so a call cancelled while `fn` runs in one ends only when `fn`
    returns (and then raises CancelledError): whoever awaits the call knows when the work has
    really ended, and an agent's slot is never freed while its work goes on.
    """
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    # In the caller's context, as asyncio.to_thread does: what the agent spends is counted there.
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    work = asyncio.get_running_loop().run_in_executor(executor, call)
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        while not work.done():
            try:
                await asyncio.wait({work})
            except asyncio.CancelledError:
                continue  # cancelled again: still wait, the thread still runs
        if not work.cancelled():
            work.exception()  # retrieved: the caller asked for a cancellation, not this outcome
        raise


class CallableAgent(Agent):
    """Runs a user function named by import path: `fn(payload) -> output`.

    Config: `class: actors:CallableAgent`, `params: {function: "pkg.mod:fn"}` and the
    capabilities it serves. Sync functions run in a thread, async ones on the loop.
    """

    def __init__(self, function: str):
        self.function = import_object(function)
        if not callable(self.function):
            raise TypeError(f"{function!r} is not callable")

    async def handle(self, task: Task) -> Any:
        return await call_maybe_async(self.function, task.payload)
