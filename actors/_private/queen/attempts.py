"""How a queen runs a task's attempt on an agent: the call and its timeout, what the attempt
spent, freeing (or holding) the agent's slot, and retrying or failing after an error."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import RayTaskError

from actors._private.agents.payload import PERMANENT
from actors._private.task import Task, TaskResult, TaskStatus
from models._private.core import tracing
from models._private.core.retry import TRANSIENT, backoff_s, unwrap_error
from models._private.core.usage import Spent

if TYPE_CHECKING:
    from actors._private.pool import AgentSlot
    from actors._private.queen.task_book import TaskRecord

__all__ = ["Attempts"]


class Attempts:
    """`SwarmQueen`'s attempts (a part of the queen, not an actor of its own)."""

    def _timeout_s(self, task: Task) -> float:
        configured = self.cap_timeouts_s.get(self._offered(task.capability) or task.capability)
        return task.timeout_s or configured or self.config.queen.default_timeout_s

    async def _run_attempt(self, rec: TaskRecord, agent: AgentSlot) -> None:
        if not tracing.enabled():
            await self._attempt(rec, agent, None)
            return
        task = rec.task
        if rec.queued_ns:
            attributes = {"swarmray.swarm": self.name, "swarmray.task_id": task.id}
            tracing.mark("task.queue_wait", task.trace or {}, rec.queued_ns, attributes)
            rec.queued_ns = 0
        attributes = {
            "swarmray.task_id": task.id,
            "swarmray.attempt": task.attempt + 1,
            "swarmray.agent": agent.id,
        }
        with tracing.span("task.attempt", task.trace or {}, "producer", attributes=attributes) as span:
            outcome = await self._attempt(rec, agent, tracing.carrier())
            span.set_attribute("swarmray.outcome", outcome)

    async def _attempt(self, rec: TaskRecord, agent: AgentSlot, trace: dict[str, str] | None) -> str:
        """Runs one attempt; returns how it ended: "succeeded" or the error's type."""
        task, res = rec.task, rec.result
        self.book.start_attempt(rec, agent.id)
        timeout_s = self._timeout_s(task)
        host = agent.host
        # The steps earlier attempts journaled, for an agent that resumes (not kept on the task:
        # the journal holds them as entries of their own); the agent's spans nest in the attempt's.
        sent = task
        if rec.steps or trace:
            update: dict[str, Any] = {"steps": list(rec.steps)}
            if trace:
                update["trace"] = trace
            sent = task.model_copy(update=update)
        call = host.handle.handle.remote(agent.id, sent)
        # A timer that cancels the wait is cheaper than asyncio.wait_for's extra task per call.
        # Locally the wait is shielded, so that cancelling it does not wait for the work.
        waiting = asyncio.shield(call) if host.local else asyncio.wrap_future(call.future())
        expired = held = False

        def expire() -> None:
            nonlocal expired
            expired = True
            waiting.cancel()

        timer = asyncio.get_running_loop().call_later(timeout_s, expire)
        error: tuple[str, str, TaskStatus] | None = None
        host_lost = permanent = False
        try:
            output, state, spent = await waiting
            self._spent(res, spent)
        except asyncio.CancelledError:
            # Ask the work to stop; its agent stays taken until it has (see _hold).
            if host.local:
                call.cancel()
            else:
                ray.cancel(call)
            held = True
            if not expired:
                raise  # cancelled by `cancel`, not by the timer
            error = (
                f"attempt {task.attempt} ran past {timeout_s} s",
                "TaskTimeoutError",
                TaskStatus.TIMED_OUT,
            )
        except RayTaskError as e:
            cause = unwrap_error(e)
            error = (str(cause), type(cause).__name__, TaskStatus.FAILED)
            permanent = isinstance(cause, PERMANENT)
            self._spent(res, getattr(cause, "spent", None))
        except TRANSIENT as e:
            error = (f"agent {agent.id} was lost: {type(e).__name__}", type(e).__name__, TaskStatus.FAILED)
            host_lost = True
            self._child_failed(host, error[0])
        except Exception as e:  # raised in this process by a co-located agent
            error = (str(e), type(e).__name__, TaskStatus.FAILED)
            permanent = isinstance(e, PERMANENT)
            self._spent(res, getattr(e, "spent", None))
        finally:
            timer.cancel()
            if held:
                self._hold(agent, call)
            else:
                self._free(agent)
        if error is None:
            agent.done += 1
            if state is not None:
                self.book.checkpoint(agent.id, state)
            self.book.finish(rec, TaskStatus.SUCCEEDED, output=output)
            return "succeeded"
        agent.failed += 1
        self._retry_or_fail(rec, *error, host_lost=host_lost, permanent=permanent)
        return error[1]

    @staticmethod
    def _spent(res: TaskResult, spent: Spent | dict[str, int] | None) -> None:
        # A task's usage sums its attempts that ended with an answer or an error; what a
        # timed-out or lost attempt spent only the AI service's own ledger knows.
        if spent:
            res.usage = res.usage or Spent()
            res.usage.add(Spent.model_validate(spent))

    def _free(self, agent: AgentSlot) -> None:
        agent.last_active = time.monotonic()
        self.dispatcher.release(agent)
        for cap in agent.capabilities:
            self._pump(cap)

    def _hold(self, agent: AgentSlot, call: Any) -> None:
        """Frees `agent`'s slot once a cancelled call has really ended: a sync agent's thread
        runs on until its function returns. A host whose work outlives `stuck_after_s` is a
        failed child, replaced (its process, and so the thread, goes with it)."""
        host = agent.host
        end = call if host.local else asyncio.wrap_future(call.future())
        stuck_s = self.config.queen.stuck_after_s

        def stuck() -> None:
            if not end.done() and not host.local:
                self._child_failed(host, f"a cancelled task still ran {stuck_s:g} s later (stuck)")

        watchdog = asyncio.get_running_loop().call_later(stuck_s, stuck)

        def ended(done: asyncio.Future) -> None:
            watchdog.cancel()
            if not done.cancelled():
                done.exception()  # retrieved: the outcome was settled when the call was cancelled
            self._free(agent)

        end.add_done_callback(ended)

    def _retry_or_fail(
        self,
        rec: TaskRecord,
        message: str,
        error_type: str,
        status: TaskStatus,
        host_lost: bool = False,
        permanent: bool = False,
    ) -> None:
        task, q = rec.task, self.config.queen
        max_retries = q.max_retries if task.max_retries is None else task.max_retries
        if host_lost:
            # The agent's process died under the task: not the task's fault, so it does not use
            # up max_retries, within a bound that stops a task that kills every agent it meets.
            rec.host_failures += 1
            task.attempt -= 1
            exhausted = rec.host_failures > q.max_host_failures
        else:  # bad input fails the same way on every agent: no retries
            exhausted = permanent or task.attempt > max_retries
        if exhausted:
            self.book.finish(rec, status, error=message, error_type=error_type)
            return
        # Retries go back through the queue so another agent can take them; a decorator
        # style retry library (tenacity) would pin them to the call that failed.
        delay = backoff_s(task.attempt, q.retry_backoff_s, q.max_retry_backoff_s)
        self.book.retry(rec, message, error_type)
        rec.timer = asyncio.get_running_loop().call_later(delay, self._retry, rec)

    def _retry(self, rec: TaskRecord) -> None:
        rec.timer = None
        if rec.result.status is TaskStatus.RETRYING:
            self._enqueue(rec)  # already accepted: a retry is never refused for a full queue
