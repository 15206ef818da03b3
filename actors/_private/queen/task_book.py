"""TaskBook: a queen's tasks, the transitions of each, and the journal entries that make them
durable.

The journal holds seven kinds of entry. Their format is durable (a queen must replay journals
that older queens wrote), so it is spelled out here and built only by the `*_entry` functions:

    {"k": "acc", "task": <Task>}                          a task was accepted
    {"k": "att", "id": <task id>, "n": <attempt>}         an attempt started
    {"k": "del", "id": <task id>, "to": <swarm>, "rid": <task id there>}   handed over
    {"k": "fin", "id": <task id>, "res": <TaskResult>, "led": <bool>}   its final result; led:
                                                          its usage goes into the ledger
    {"k": "snap", "agent": <agent id>, "state": <any>}    an agent's last checkpoint
    {"k": "led", "rows": <UsageLedger.dump()>}            the usage ledger (compaction)
    {"k": "step", "id": <task id>, "i": <index>, "n": <attempt>, "step": <any>}   a step an
                                                          attempt finished (an agent's model
                                                          call, a tool's result); i: its place
                                                          among the task's steps, so a step
                                                          replayed twice is kept once; n: the
                                                          attempt (after a compaction, the
                                                          task's attempts then)

A task's steps go to every later attempt (`Task.steps`), so an agent whose host died resumes
after its last finished step instead of doing the work again; they are kept until the task
ends, and journaled with the live tasks when the journal is compacted.

`TaskBook` keeps the records of a running queen and owns their transitions: each of `admit`,
`start_attempt`, `record_steps`, `checkpoint`, `retry`, `delegate`, `move` and `finish` changes the record,
writes its journal entry and counts its metric in one call, so the queen makes one call per
transition. `TaskBook.replay` folds a journal into a book with the very `accept` and `settle`
steps those transitions take, so a replayed queen counts, and forgets old results, exactly as
the queen that wrote the journal did (metrics count the live process only, never a replay).
`TaskBook.live_entries` is the inverse: the fewest entries that replay to the same state.
Nothing here touches Ray; the only asyncio tasks started here write final results (`finish`),
and the queen starts attempts and follows delegations itself.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections import Counter, OrderedDict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actors._private.task import Task, TaskResult, TaskStatus, Timings, now
from models._private.core.errors import StaleAttemptError, TaskNotFoundError
from models._private.core.names import capability_offered
from models._private.core.retry import backoff_s
from models._private.core.usage import UsageLedger

if TYPE_CHECKING:
    from actors._private.config import QueenConfig
    from actors._private.metrics import SwarmMetrics
    from models._private.core.journal import Journal

__all__ = [
    "TaskBook",
    "TaskRecord",
    "acc_entry",
    "att_entry",
    "del_entry",
    "fin_entry",
    "led_entry",
    "snap_entry",
    "step_entry",
]

log = logging.getLogger(__name__)


def acc_entry(task: Task) -> dict[str, Any]:
    """The entry that makes an accepted task durable (its steps are entries of their own; an
    untraced task's entry has no `trace`, as before tracing, so older versions replay it)."""
    dropped = {"steps", "trace"} if task.trace is None else {"steps"}
    return {"k": "acc", "task": task.model_dump(mode="json", exclude=dropped)}


def att_entry(task_id: str, attempt: int) -> dict[str, Any]:
    """The entry saying attempt number `attempt` of a task started."""
    return {"k": "att", "id": task_id, "n": attempt}


def del_entry(task_id: str, delegated_to: tuple[str, str]) -> dict[str, Any]:
    """The entry saying a task was handed to `(swarm, task id there)`."""
    swarm, remote_id = delegated_to
    return {"k": "del", "id": task_id, "to": swarm, "rid": remote_id}


def fin_entry(final: TaskResult, ledger: bool = True) -> dict[str, Any]:
    """The entry holding a task's final result; `ledger`: its usage counts in this swarm's
    ledger when replayed (it ran here, and no ledger entry holds it yet)."""
    return {"k": "fin", "id": final.task_id, "res": final.model_dump(mode="json"), "led": ledger}


def led_entry(ledger: UsageLedger) -> dict[str, Any]:
    """The entry holding the whole usage ledger."""
    return {"k": "led", "rows": ledger.dump()}


def step_entry(task_id: str, index: int, attempt: int, step: Any) -> dict[str, Any]:
    """The entry holding step number `index` of a task, which attempt `attempt` finished."""
    return {"k": "step", "id": task_id, "i": index, "n": attempt, "step": step}


def snap_entry(agent_id: str, state: Any) -> dict[str, Any]:
    """The entry holding an agent's last checkpoint."""
    return {"k": "snap", "agent": agent_id, "state": state}


@dataclass(eq=False)
class TaskRecord:
    """One accepted task as its queen tracks it: the task, its latest result, what runs it."""

    task: Task
    result: TaskResult
    done: asyncio.Event = field(default_factory=asyncio.Event)  # set once the result is final
    attempt: asyncio.Task | None = None  # the running attempt, or the delegation follower
    timer: asyncio.TimerHandle | None = None  # a pending retry
    delegated_to: tuple[str, str] | None = None  # (swarm, task id there)
    host_failures: int = 0
    final: TaskResult | None = None  # the final result while it is being journaled
    steps: list[Any] = field(default_factory=list)  # what its attempts journaled, until it ends
    queued_ns: int = 0  # when it was last queued (Unix ns), while tracing is on: its queue wait


class TaskBook:
    """Every task a queen knows by id, the ids of its final results, counts and checkpoints.

    Final results are kept for `result` up to `keep_results`; past that the oldest records
    are dropped. The transitions of a running queen write to `journal`, count in `metrics` and
    retry a failed write of a result with `policy`'s backoff; a book made without them can only
    replay and compact (`accept`, `settle`, `replay`, `live_entries`).
    """

    def __init__(
        self,
        swarm: str,
        keep_results: int,
        journal: Journal | None = None,
        metrics: SwarmMetrics | None = None,
        policy: QueenConfig | None = None,
    ):
        self.swarm = swarm
        self.keep_results = keep_results
        self.journal = journal
        self.metrics = metrics
        self.policy = policy
        self.records: dict[str, TaskRecord] = {}
        self.finished: OrderedDict[str, None] = OrderedDict()  # final ids, oldest first
        self.counts: Counter[str] = Counter()
        self.snapshots: dict[str, Any] = {}  # agent id -> last checkpoint
        self.usage = UsageLedger(("capability",))  # what tasks run here spent, by capability
        self._writing: set[asyncio.Task] = set()  # final results being journaled

    def get(self, task_id: str) -> TaskRecord:
        """The record of a task.

        Raises:
            TaskNotFoundError: the queen never accepted the task, or has dropped its result.
        """
        rec = self.records.get(task_id)
        if rec is None:
            raise TaskNotFoundError(task_id, self.swarm)
        return rec

    # -- the transitions of a running queen -----------------------------------------------

    def admit(self, task: Task, delegated_to: tuple[str, str] | None = None) -> TaskRecord:
        """Accepts a task: queued here, or handed over to `delegated_to` (swarm, task id there).

        Its journal entries are queued without a sync of their own (the caller flushes them, or
        lets them ride with a later write); the metrics count it submitted (and delegated).
        """
        if delegated_to is None:
            rec = self.accept(task, TaskStatus.QUEUED)
            self.journal.append_nowait(acc_entry(rec.task), wake=False)
            self.metrics.submitted(task.capability)
            return rec
        rec = self.accept(task, TaskStatus.DELEGATED)
        rec.delegated_to = delegated_to
        self.metrics.submitted(task.capability)
        self.metrics.delegated(task.capability, delegated_to[0])
        self.journal.append_nowait(acc_entry(rec.task), del_entry(rec.task.id, delegated_to), wake=False)
        return rec

    def start_attempt(self, rec: TaskRecord, agent_id: str) -> None:
        """The next attempt of a task starts on `agent_id`, timed from now; its journal entry
        needs no sync of its own: it rides along with the next write."""
        task, res = rec.task, rec.result
        task.attempt += 1
        res.status, res.attempts = TaskStatus.RUNNING, task.attempt
        res.agent_id, res.swarm = agent_id, self.swarm
        res.timings.started_at, res.timings.finished_at = now(), None
        self.journal.append_nowait(att_entry(task.id, task.attempt), wake=False)

    async def record_steps(self, rec: TaskRecord, attempt: int, agent_id: str, steps: list[Any]) -> int:
        """Journals steps that attempt `attempt` of a task, on `agent_id`, finished, in one
        write, and returns once they are durable; returns the task's count of steps.

        Raises:
            StaleAttemptError: that attempt no longer runs the task (it timed out and another
                started, or the task ended): its work must not be taken for the task's.
        """
        task, res = rec.task, rec.result
        if rec.final is not None or res.status.final:
            raise StaleAttemptError(task.id, attempt, f"the task has ended ({res.status.value})")
        if res.status is not TaskStatus.RUNNING or task.attempt != attempt or res.agent_id != agent_id:
            raise StaleAttemptError(
                task.id, attempt, f"attempt {task.attempt} on {res.agent_id} runs it ({res.status.value})"
            )
        first = len(rec.steps)
        rec.steps += steps
        self.counts["steps"] += len(steps)
        await self.journal.append(*(step_entry(task.id, first + i, attempt, s) for i, s in enumerate(steps)))
        return len(rec.steps)

    def checkpoint(self, agent_id: str, state: Any) -> None:
        """An agent's last checkpoint, kept for its restart and journaled (riding along)."""
        self.snapshots[agent_id] = state
        self.journal.append_nowait(snap_entry(agent_id, state), wake=False)

    def retry(self, rec: TaskRecord, error: str, error_type: str) -> None:
        """A failed attempt is to be tried again: the task is retrying with the attempt's error,
        counted; nothing is journaled (a replay queues an unfinished task again anyway)."""
        res = rec.result
        res.status, res.error, res.error_type = TaskStatus.RETRYING, error, error_type
        self.counts["retried"] += 1
        self.metrics.retried(rec.task.capability)
        rec.attempt = None

    def delegate(self, rec: TaskRecord, delegated_to: tuple[str, str]) -> None:
        """A task taken off this queen's queue was handed over to `delegated_to` (swarm, task id
        there): recorded, journaled and counted as delegated."""
        rec.delegated_to = delegated_to
        self.metrics.delegated(rec.task.capability, delegated_to[0])
        self.journal.append_nowait(del_entry(rec.task.id, delegated_to))

    async def move(self, rec: TaskRecord) -> None:
        """A delegated task was handed on to another swarm (the delegator set `delegated_to`):
        journaled, and synced before it is followed there."""
        await self.journal.append(del_entry(rec.task.id, rec.delegated_to))

    def finish(
        self,
        rec: TaskRecord,
        status: TaskStatus,
        output: Any = None,
        error: str | None = None,
        error_type: str | None = None,
    ) -> None:
        """Ends a task with its final result, once per task id (a second end is counted as a
        duplicate and ignored).

        The result becomes visible (`done`, `result`) only once journaled, so no caller ever
        sees a result that a crash could take back; a failed write (a full disk) is tried again
        until the disk takes it. Then it is counted and timed, and the oldest results past
        `keep_results` are dropped.
        """
        if rec.final is not None or rec.result.status.final:
            self.counts["duplicates_ignored"] += 1  # results are recorded once per task id
            return
        final = rec.result.model_copy(deep=True)
        final.status, final.output, final.error, final.error_type = status, output, error, error_type
        final.timings.finished_at = now()
        rec.final, rec.attempt = final, None
        write = asyncio.get_running_loop().create_task(self._commit(rec, final))
        self._writing.add(write)
        write.add_done_callback(self._writing.discard)

    async def _commit(self, rec: TaskRecord, final: TaskResult) -> None:
        q = self.policy
        for failures in itertools.count(1):
            try:
                await self.journal.append(fin_entry(final, ledger=rec.delegated_to is None))
                break
            except Exception as e:
                self.counts["journal_errors"] += 1
                log.error("swarm %s could not journal the result of %s: %r", self.swarm, final.task_id, e)
                await asyncio.sleep(backoff_s(failures, q.retry_backoff_s, q.max_retry_backoff_s))
        self.settle(rec, final)
        self.metrics.ended(final, ran_here=rec.delegated_to is None)

    async def compact(self) -> None:
        """Rewrites the journal as `live_entries`, and counts the compaction."""
        await self.journal.rewrite(self.live_entries)
        self.counts["compactions"] += 1

    # -- the steps replay shares with them -------------------------------------------------

    def accept(self, task: Task, status: TaskStatus) -> TaskRecord:
        """Records a task as accepted, naming it `<swarm>:<hex>` unless it has an id."""
        task.id = task.id or f"{self.swarm}:{uuid.uuid4().hex[:16]}"
        task.origin_swarm = task.origin_swarm or self.swarm
        rec = TaskRecord(
            task,
            TaskResult(
                task_id=task.id,
                capability=task.capability,
                status=status,
                timings=Timings(submitted_at=task.submitted_at),
            ),
        )
        self.records[task.id] = rec
        self.counts["accepted"] += 1
        return rec

    def settle(self, rec: TaskRecord, final: TaskResult, ledger: bool | None = None) -> None:
        """Makes a journaled final result visible, counts its usage in the ledger (`ledger`;
        None: when it ran here), and drops the oldest results past `keep_results`."""
        rec.result, rec.final = final, None
        rec.steps = []  # no attempt will resume from them
        rec.done.set()
        # Delegated tasks are counted where they run; here only as handed over.
        self.counts["delegated" if rec.delegated_to else final.status.value] += 1
        if (rec.delegated_to is None if ledger is None else ledger) and final.usage is not None:
            self.usage.add(
                final.timings.finished_at or final.timings.submitted_at, (final.capability,), final.usage
            )
        self.finished[final.task_id] = None
        while len(self.finished) > self.keep_results:
            old, _ = self.finished.popitem(last=False)
            self.records.pop(old, None)

    def pending(self) -> list[TaskRecord]:
        """The records whose result is not final yet, oldest accepted first."""
        return [r for r in self.records.values() if not r.done.is_set()]

    # -- recovery ---------------------------------------------------------------------------

    def replay(self, entries: Iterable[dict[str, Any]], local_caps: Collection[str]) -> list[TaskRecord]:
        """Rebuilds tasks and results from journal entries; returns the records still to finish.

        A pending record with `delegated_to` set is to be followed where it went; any other is
        to be queued again (execution is at-least-once). An entry already applied is a no-op,
        so each task's result is recorded once.
        """
        for entry in entries:
            kind = entry["k"]
            if kind == "acc":
                task = Task.model_validate(entry["task"])
                if task.id not in self.records:
                    here = capability_offered(local_caps, task.capability) is not None
                    status = TaskStatus.QUEUED if here else TaskStatus.DELEGATED
                    self.accept(task, status)
            elif kind == "fin":
                final = TaskResult.model_validate(entry["res"])
                rec = self.records.get(final.task_id)
                if rec is None:  # compacted: the task itself is no longer journaled
                    rec = self.accept(Task(id=final.task_id, capability=final.capability), final.status)
                if not rec.done.is_set():
                    self.settle(rec, final, ledger=entry.get("led"))
            elif (rec := self.records.get(entry.get("id", ""))) is not None:
                if kind == "att":
                    rec.task.attempt = max(rec.task.attempt, entry["n"])
                elif kind == "step":
                    if entry["i"] == len(rec.steps) and not rec.done.is_set():
                        rec.steps.append(entry["step"])  # an index already kept: replayed twice
                elif kind == "del":  # also a local task that a failed swarm rerouted
                    rec.delegated_to = (entry["to"], entry["rid"])
                    if not rec.done.is_set():
                        rec.result.status = TaskStatus.DELEGATED
            elif kind == "snap":
                self.snapshots[entry["agent"]] = entry["state"]
            elif kind == "led":
                self.usage.load(entry["rows"])
        pending = self.pending()
        self.counts["replayed"] = len(pending)
        return pending

    def live_entries(self) -> list[dict[str, Any]]:
        """The journal, compacted: what replay needs to rebuild the current state."""
        out: list[dict[str, Any]] = [led_entry(self.usage)]
        # Results still being journaled go last: their own fin entry follows the compacted
        # base, and must find their record still kept (not dropped as the oldest) to be a no-op.
        writing = []
        for rec in self.records.values():
            if rec.done.is_set():  # settled: its usage is in the ledger entry above
                out.append(fin_entry(rec.result, ledger=False))
                continue
            if rec.final is not None:  # counts as final, its usage not yet in the ledger
                writing.append(fin_entry(rec.final, ledger=rec.delegated_to is None))
                continue
            out.append(acc_entry(rec.task))
            out += [step_entry(rec.task.id, i, rec.task.attempt, s) for i, s in enumerate(rec.steps)]
            if rec.delegated_to:
                out.append(del_entry(rec.task.id, rec.delegated_to))
        out += [snap_entry(a, s) for a, s in self.snapshots.items()]
        return out + writing
