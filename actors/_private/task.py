"""Task and result: the two models that travel between clients, queens and agents."""

from __future__ import annotations

import time
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat

from models._private.core.config import CapabilityName
from models._private.core.usage import Spent

__all__ = ["Task", "TaskResult", "TaskStatus", "Timings"]


class TaskStatus(str, Enum):
    """Where a task is in its life; the last four are final."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    DELEGATED = "delegated"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """Whether the task can change no more."""
        return self in _FINAL


_FINAL = {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.TIMED_OUT, TaskStatus.CANCELLED}


class Task(BaseModel):
    """A unit of work for one capability.

    Clients set `capability`, `payload` and optionally `priority`, `timeout_s` and
    `max_retries`; the queen fills in the rest.
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field("", description="Assigned by the accepting queen: '<swarm>:<hex>'.")
    capability: CapabilityName = Field(description="The capability that must handle the task.")
    payload: dict[str, Any] = Field(default_factory=dict, description="Input for the agent.")
    priority: int = Field(0, description="Higher runs first; equal priorities run in order.")
    timeout_s: PositiveFloat | None = Field(
        None, description="Per-attempt timeout; None takes the capability's or queen's default."
    )
    max_retries: NonNegativeInt | None = Field(
        None, description="Extra attempts after a failure; None takes the queen's default."
    )
    attempt: NonNegativeInt = Field(0, description="Attempts started so far.")
    origin_swarm: str | None = Field(None, description="Swarm that first accepted the task.")
    hops: NonNegativeInt = Field(0, description="Times the task was delegated between swarms.")
    visited: list[str] = Field(default_factory=list, description="Swarms the task passed through.")
    submitted_at: float = Field(0.0, description="Unix time the first queen accepted it.")
    steps: list[Any] = Field(
        default_factory=list,
        description="What earlier attempts journaled (`SwarmQueen.record_steps`), oldest first, "
        "filled by the queen when it starts an attempt, so that a resumed agent skips work "
        "that had finished; never journaled as part of the task itself.",
    )
    trace: dict[str, str] | None = Field(
        None,
        description="The W3C trace context (`traceparent`) the task runs under: its submitter's "
        "span, then the accepting queen's `queen.accept`; journaled with the task, so that its "
        "retries after a restart stay in its trace. None: not traced.",
    )


class Timings(BaseModel):
    """Unix times of a task's milestones, and the spans derived from them."""

    submitted_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def queue_s(self) -> float | None:
        """Seconds from acceptance to the start of the last attempt."""
        return None if self.started_at is None else self.started_at - self.submitted_at

    @property
    def run_s(self) -> float | None:
        """Seconds the last attempt ran."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


class TaskResult(BaseModel):
    """The state or outcome of a task, as `result` and `status` report it."""

    task_id: str
    capability: str
    status: TaskStatus
    output: Any = None
    error: str | None = Field(None, description="Why the task failed, for final failures.")
    error_type: str | None = Field(None, description="Exception class name behind `error`.")
    agent_id: str | None = Field(None, description="Agent that ran the last attempt.")
    swarm: str | None = Field(None, description="Swarm whose agent ran the last attempt.")
    attempts: int = 0
    timings: Timings = Field(default_factory=Timings)
    usage: Spent | None = Field(
        None,
        description="Tokens and cost its attempts spent through the AI service (those that "
        "ended with an answer or an error; a delegated task's include the other swarm's).",
    )

    @property
    def ok(self) -> bool:
        """Whether the task succeeded."""
        return self.status is TaskStatus.SUCCEEDED


def now() -> float:
    """Wall-clock time used for task timings."""
    return time.time()
