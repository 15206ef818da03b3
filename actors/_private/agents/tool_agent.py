"""The tool-using agent kind: a model that calls the system's capabilities as tools, in a loop
that is journaled step by step with its task, so that a retried attempt resumes where the last
one stopped."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from actors._private.agents.agent import Agent
from actors._private.services import AI_URL_KEY, FACTS_URL_KEY, ServiceClient
from actors._private.task import Task
from models._private.core import tracing
from models._private.core.errors import ConfigError, SwarmrayError
from models._private.core.names import is_family

__all__ = ["ToolAgent", "ToolAgentInput", "function_name"]

BUILTIN_TOOLS = ("search_facts", "recall_memory", "store_memory")
_NOT_A_NAME = re.compile(r"[^a-zA-Z0-9_-]")
_PATTERN = re.compile(r"[*?\[]")
ToolChoice = str | dict[str, Any]


def function_name(capability: str) -> str:
    """The function name a capability goes by as a tool: OpenAI's names take [a-zA-Z0-9_-] only,
    so every other character becomes `_` (`text.stats` -> `text_stats`)."""
    return _NOT_A_NAME.sub("_", capability)


class ToolAgentInput(BaseModel):
    """What the agent is asked."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1, description="The question or instruction for the agent.")


class SearchFactsArgs(BaseModel):
    query: str = Field(min_length=1, description="What to look for.")
    k: int = Field(5, ge=1, le=20, description="How many facts and passages (each) to return.")


class RecallMemoryArgs(BaseModel):
    query: str = Field(min_length=1, description="What to recall.")
    k: int = Field(5, ge=1, le=20, description="How many records to return.")


class StoreMemoryArgs(BaseModel):
    text: str = Field(min_length=1, description="What to remember.")


_BUILTIN_SPECS = {
    "search_facts": (SearchFactsArgs, "Searches the facts service: facts (sentences) and passages."),
    "recall_memory": (RecallMemoryArgs, "Recalls the records of the agent's memory closest to a query."),
    "store_memory": (StoreMemoryArgs, "Stores a text in the agent's memory; returns its id."),
}


@dataclass(frozen=True)
class _Tool:
    name: str  # the function name the model calls
    spec: dict[str, Any]  # the OpenAI function tool
    capability: str | None = None  # None: a built-in tool


class _ToolFailed(Exception):
    """A tool call that cannot run (unknown name, arguments that are not JSON, a child task that
    failed): it goes back to the model as the tool's error, never out of the loop."""


def _tool_choice(choice: ToolChoice) -> ToolChoice:
    # A plain function name is OpenAI's named choice.
    if isinstance(choice, str) and choice not in ("none", "auto", "required"):
        return {"type": "function", "function": {"name": choice}}
    return choice


class _Steps:
    """The steps of one task: those earlier attempts journaled (`Task.steps`), and new ones,
    kept here until `flush` journals them with the task in its queen, in one write.

    Step formats (the JSON the queen keeps):
        {"kind": "model", "n": <step>, "message": {"content", "tool_calls"}, "finish_reason",
         "usage"}                                   the model's answer at step n
        {"kind": "child", "n": <step>, "call": <tool call id>, "task_id": <id>}
                                                    a tool's child task, named before submitting
        {"kind": "tool", "n": <step>, "call": <tool call id>, "result" | "error": <JSON | str>,
         "task_id"?: <id>}                          a tool call's outcome
    """

    def __init__(self, agent: ToolAgent, task: Task):
        self.agent, self.task = agent, task
        self.models: dict[int, dict[str, Any]] = {}
        self.children: dict[tuple[int, str], str] = {}
        self.tools: dict[tuple[int, str], dict[str, Any]] = {}
        self.unwritten: list[dict[str, Any]] = []
        for step in task.steps:
            self._keep(step)
        self.resumed = len(task.steps)

    def add(self, step: dict[str, Any]) -> None:
        """Keeps a new step, to be journaled by the next `flush`."""
        self._keep(step)
        self.unwritten.append(step)

    def _keep(self, step: dict[str, Any]) -> None:
        kind = step["kind"]
        if kind == "model":
            self.models[step["n"]] = step
        elif kind == "child":
            self.children[step["n"], step["call"]] = step["task_id"]
        elif kind == "tool":
            self.tools[step["n"], step["call"]] = step

    async def flush(self) -> None:
        """Journals the steps added since the last flush; returns once they are durable.

        Raises:
            StaleAttemptError: this attempt no longer runs the task.
        """
        if self.unwritten:
            ctx, steps = self.agent.context, self.unwritten
            self.unwritten = []
            await ctx.tasks.record_steps(self.task, ctx.swarm, ctx.agent_id, steps)


class ToolAgent(Agent):
    """`agent.run`: a model that uses the system's capabilities as tools until it answers.

    Each step asks the model (POST /chat/completions with `tools`); the tool calls it makes run
    at once (concurrently), a capability's as a child task routed by the registry and run by a
    queen, and their results go back as `tool` messages; the loop ends when the model answers
    without a tool call or a limit is reached. Every model answer and every tool result is
    journaled with the task before the loop goes on, and a child task's id before it is
    submitted: a retried attempt (its host died) replays them and resumes after the last
    finished step, waiting for a child task already submitted rather than submitting another.

    No deadlock on itself: the agent's own capabilities are never its tools, so a child never
    waits for a slot its parent holds. Two tool-using pools whose tools name each other's
    capability could still hold every slot of both while their children queue: each wait ends
    after `tool_timeout_s` with an error the model sees, and the loop, and its slot, goes on.

    Params (from the pool's `agent.params`):
        model: The model (or alias) to ask.
        tools: Capability names or fnmatch patterns (`text.*`) of any swarm, and built-in tools
            by name or pattern: `search_facts` (the facts service), `recall_memory` and
            `store_memory` (the agent's memory). A capability `a.b` is the function `a_b`; its
            parameters are the JSON Schema of its payload model, its description the catalog's.
            The agent's own capabilities are never its tools.
        system: An optional system message.
        first_tool_choice: tool_choice for the first step (`required` makes a small model call a
            tool first); None: `tool_choice`.
        tool_choice: tool_choice for the other steps: none, auto, required or a function name.
        parallel_tool_calls: Whether one answer may call several tools (sent as OpenAI's
            `parallel_tool_calls`); None leaves it to the service (which allows it). False keeps
            a forced call of a small model to one call of known size.
        max_steps: Model calls at most; a tool call asked for at the last step is not run.
        max_tool_calls: Tool calls at most; a step whose calls would pass it is not run.
        max_tokens_per_task: Tokens (prompt + completion, from each answer's usage) after which
            no more tools run; None: no budget.
        max_tokens, temperature: Sampling, per model call.
        tool_timeout_s: Longest wait for a child task's result (then an error for the model).
            The whole loop runs in one attempt: give `agent.run` a capability `timeout_s` that
            covers `max_steps` model calls and their tools (the queen's default is 60 s).
        max_result_chars: A tool result longer than this, as JSON, is cut (with a note) before it
            is journaled and shown to the model.
        memory_scope: swarm or global: where `recall_memory` and `store_memory` go.
        facts_mode, facts_namespaces: How `search_facts` searches.
        catalog_ttl_s: How long the capability tools found are kept before they are looked up again.
        base_url, facts_url: The services' /v1 URLs; None reads them from the registry.

    Payload (`ToolAgentInput`): {"input": "..."}.
    Output: {"answer", "stopped" (answer, max_steps, max_tool_calls or token_budget), "steps"
    (each: "n", "content", "finish_reason", "usage", "tool_calls" (each: "id", "name",
    "arguments", "task_id" for a capability, "result" or "error")), "usage" (the totals),
    "resumed" (steps taken over from earlier attempts), "tools" (the function names offered)}.
    """

    capabilities = ("agent.run",)
    payloads = {"agent.run": ToolAgentInput}
    descriptions = {
        "agent.run": "Answers with a model that calls the system's capabilities as tools, step by "
        "step; returns the answer and each step's tool calls and results."
    }

    def __init__(
        self,
        model: str,
        tools: list[str] | tuple[str, ...] = (),
        system: str | None = None,
        first_tool_choice: ToolChoice | None = None,
        tool_choice: ToolChoice = "auto",
        parallel_tool_calls: bool | None = None,
        max_steps: int = 6,
        max_tool_calls: int = 12,
        max_tokens_per_task: int | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        tool_timeout_s: float = 30.0,
        max_result_chars: int = 4000,
        memory_scope: Literal["swarm", "global"] = "swarm",
        facts_mode: Literal["passages", "facts", "hybrid", "graph"] = "graph",
        facts_namespaces: list[str] | None = None,
        catalog_ttl_s: float = 30.0,
        base_url: str | None = None,
        facts_url: str | None = None,
        timeout_s: float = 120.0,
    ):
        if max_steps < 1 or max_tool_calls < 0 or max_result_chars < 100:
            raise ValueError(
                f"max_steps ({max_steps}) must be >= 1, max_tool_calls ({max_tool_calls}) >= 0 and "
                f"max_result_chars ({max_result_chars}) >= 100"
            )
        self.patterns = list(tools)
        names: dict[str, str] = {}
        for spec in self.patterns:  # patterns are resolved per task; plain names collide now
            if not _PATTERN.search(spec):
                name = spec if spec in BUILTIN_TOOLS else function_name(spec)
                if names.setdefault(name, spec) != spec:
                    raise ValueError(f"tools {names[name]!r} and {spec!r} are both the function {name!r}")
        self.model, self.system = model, system
        self.first_tool_choice = _tool_choice(first_tool_choice or tool_choice)
        self.tool_choice = _tool_choice(tool_choice)
        self.parallel_tool_calls = parallel_tool_calls
        self.max_steps, self.max_tool_calls = max_steps, max_tool_calls
        self.max_tokens_per_task = max_tokens_per_task
        self.max_tokens, self.temperature = max_tokens, temperature
        self.tool_timeout_s, self.max_result_chars = tool_timeout_s, max_result_chars
        self.memory_scope = memory_scope
        self.facts_mode, self.facts_namespaces = facts_mode, facts_namespaces
        self.catalog_ttl_s = catalog_ttl_s
        self.ai = ServiceClient(AI_URL_KEY, base_url, timeout_s)
        self.facts = ServiceClient(FACTS_URL_KEY, facts_url, timeout_s)
        self._tools: dict[str, _Tool] | None = None
        self._tools_at = 0.0
        self._builtins: dict[str, Callable[[Task, int, str, dict], Awaitable[Any]]] = {
            "search_facts": self._search_facts,
            "recall_memory": self._recall_memory,
            "store_memory": self._store_memory,
        }

    # -- the tools ------------------------------------------------------------------------

    def _chosen(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.patterns)

    async def tools(self) -> dict[str, _Tool]:
        """Function name -> tool: the built-ins chosen, and each capability of the catalog
        chosen (but the agent's own), looked up again after `catalog_ttl_s`.

        Raises:
            ConfigError: two tools chosen go by the same function name.
        """
        if self._tools is not None and time.monotonic() - self._tools_at < self.catalog_ttl_s:
            return self._tools
        found: dict[str, _Tool] = {}
        owners: dict[str, str] = {}

        def add(tool: _Tool, owner: str) -> None:
            if owners.setdefault(tool.name, owner) != owner:
                raise ConfigError(
                    "agent.params.tools",
                    [(owner, f"is the function {tool.name!r}, as {owners[tool.name]!r} is")],
                )
            found[tool.name] = tool

        for name, (model, description) in _BUILTIN_SPECS.items():
            if self._chosen(name):
                add(_Tool(name, function_tool(name, description, model.model_json_schema())), name)
        own = set(self.context.capabilities)  # never itself: no task waits on its own kind
        catalog = await self.context.tasks.catalog() if self.patterns else []
        for entry in catalog:
            cap = entry["capability"]
            if is_family(cap) or cap in own or not self._chosen(cap):
                continue  # a family no agent class could list: no one tool to call
            if owners.get(function_name(cap)) == cap:
                continue  # offered by several swarms: one tool
            name, schema = function_name(cap), entry.get("schema") or {"type": "object"}
            add(_Tool(name, function_tool(name, entry["description"], schema), cap), cap)
        self._tools, self._tools_at = found, time.monotonic()
        return found

    # -- the loop -------------------------------------------------------------------------

    async def handle(self, task: Task) -> Any:
        tools = await self.tools()
        steps = _Steps(self, task)
        try:
            return await self._run(task, tools, steps)
        except Exception:
            # An attempt that fails (rather than one whose process dies) leaves what it finished
            # to the next; if that write fails too, the next waits for the children again.
            with contextlib.suppress(Exception):
                await steps.flush()
            raise

    async def _run(self, task: Task, tools: dict[str, _Tool], steps: _Steps) -> dict[str, Any]:
        specs = [t.spec for t in tools.values()]
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": task.payload["input"]})
        trace: list[dict[str, Any]] = []
        totals = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        calls_made, answer, stopped = 0, None, "max_steps"
        for n in range(self.max_steps):
            step = steps.models.get(n)
            if step is None:
                step = await self._ask(messages, specs, n)
                steps.add(step)
                await self._name_children(steps, tools, n, step["message"]["tool_calls"])
                # One write: the last step's tool results, this answer and the ids of the child
                # tasks it asks for, durable before any of them is submitted.
                await steps.flush()
            usage = step["usage"]
            for key in totals:
                totals[key] += int(usage.get(key) or 0)
            message = step["message"]
            calls = message["tool_calls"]
            entry = {
                "n": n,
                "content": message["content"],
                "finish_reason": step["finish_reason"],
                "usage": usage,
                "tool_calls": [],
            }
            trace.append(entry)
            answer = message["content"]
            if not calls:
                stopped = "answer"
                break
            budget = self.max_tokens_per_task
            if budget is not None and totals["total_tokens"] >= budget:
                stopped = "token_budget"
                break
            if calls_made + len(calls) > self.max_tool_calls:
                stopped = "max_tool_calls"
                break
            if n == self.max_steps - 1:
                break  # no model call would read their results
            outcomes = await asyncio.gather(*(self._call(task, steps, tools, n, c) for c in calls))
            calls_made += len(calls)
            messages.append({"role": "assistant", "content": message["content"], "tool_calls": calls})
            for call, outcome in zip(calls, outcomes, strict=True):
                function = call.get("function") or {}
                shown = {"id": call["id"], "name": function.get("name")}
                shown["arguments"] = function.get("arguments")
                shown.update((k, outcome[k]) for k in ("task_id", "result", "error") if k in outcome)
                entry["tool_calls"].append(shown)
                content = outcome["result"] if "result" in outcome else {"error": outcome["error"]}
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call["id"],
                        "content": content if isinstance(content, str) else json.dumps(content),
                    }
                )
        return {
            "answer": answer,
            "stopped": stopped,
            "steps": trace,
            "usage": totals,
            "resumed": steps.resumed,
            "tools": list(tools),
        }

    async def _ask(self, messages: list[dict[str, Any]], specs: list[dict], n: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "user": f"{self.context.swarm}/{self.context.agent_id}",
        }
        if specs:
            body["tools"] = specs
            body["tool_choice"] = self.first_tool_choice if n == 0 else self.tool_choice
            if self.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = self.parallel_tool_calls
        data = await self.ai.post(self.context, "chat/completions", body)
        choice = data["choices"][0]
        message = choice["message"]
        calls, ids = [], set()
        for i, call in enumerate(message.get("tool_calls") or []):
            # An id is what ties a result to its call: one missing or repeated is made unique
            # here, before it is journaled, so a replay ties the same results to the same calls.
            call_id = call.get("id") or f"call_{n}_{i}"
            call_id = call_id if call_id not in ids else f"{call_id}_{i}"
            ids.add(call_id)
            calls.append({"type": "function", **call, "id": call_id})
        return {
            "kind": "model",
            "n": n,
            "message": {"content": message.get("content"), "tool_calls": calls},
            "finish_reason": choice.get("finish_reason"),
            "usage": data.get("usage") or {},
        }

    async def _name_children(
        self, steps: _Steps, tools: dict[str, _Tool], n: int, calls: list[dict[str, Any]]
    ) -> None:
        """Names the child task of each call of a capability (a swarm the registry routes it to,
        a fresh id there), as steps; a call that cannot be routed gets its error as its outcome."""
        routed = [
            (call, tool.capability)
            for call in calls
            if (tool := tools.get((call.get("function") or {}).get("name"))) is not None and tool.capability
        ]
        swarms = await asyncio.gather(
            *(self.context.tasks.route(cap) for _, cap in routed), return_exceptions=True
        )
        for (call, _), swarm in zip(routed, swarms, strict=True):
            if isinstance(swarm, SwarmrayError):  # no swarm offers it, or none can take it now
                steps.add(
                    {"kind": "tool", "n": n, "call": call["id"], "error": f"{type(swarm).__name__}: {swarm}"}
                )
            elif isinstance(swarm, BaseException):
                raise swarm
            else:
                child = self.context.tasks.new_task_id(swarm)
                steps.add({"kind": "child", "n": n, "call": call["id"], "task_id": child})

    async def _call(
        self, task: Task, steps: _Steps, tools: dict[str, _Tool], n: int, call: dict[str, Any]
    ) -> dict[str, Any]:
        """One tool call's outcome ({"result"} or {"error"}, and the child task's id), kept to be
        journaled with the next model answer; or, resumed, as an earlier attempt journaled it."""
        key = (n, call["id"])
        if (done := steps.tools.get(key)) is not None:
            return done
        if not tracing.enabled():
            return await self._run_tool(task, steps, tools, n, call)
        function = (call.get("function") or {}).get("name")
        tool = tools.get(function)
        name = (tool.capability or tool.name) if tool is not None else function
        attributes = {"swarmray.tool": str(name), "swarmray.tool_call_id": call["id"], "swarmray.step": n}
        # Current within: the child task's accept (`_run_child`) nests under it.
        with tracing.span(f"tool.call {name}", attributes=attributes) as span:
            outcome = await self._run_tool(task, steps, tools, n, call)
            if "error" in outcome:
                span.set_attribute("swarmray.error", outcome["error"])
            if "task_id" in outcome:
                span.set_attribute("swarmray.child_task_id", outcome["task_id"])
        return outcome

    async def _run_tool(
        self, task: Task, steps: _Steps, tools: dict[str, _Tool], n: int, call: dict[str, Any]
    ) -> dict[str, Any]:
        key = (n, call["id"])
        outcome: dict[str, Any] = {"kind": "tool", "n": n, "call": call["id"]}
        function = call.get("function") or {}
        try:
            tool = tools.get(function.get("name"))
            if tool is None:
                raise _ToolFailed(f"no tool is named {function.get('name')!r}; the tools: {', '.join(tools)}")
            try:
                args = json.loads(function.get("arguments") or "{}")
            except ValueError as e:
                raise _ToolFailed(f"the arguments are not JSON: {e}") from None
            if not isinstance(args, dict):
                raise _ToolFailed(f"the arguments must be a JSON object, not {type(args).__name__}")
            if tool.capability is None:
                result = await self._builtins[tool.name](task, n, call["id"], args)
            else:
                child = steps.children.get(key)  # named in the write of the model's answer
                if child is None:  # resumed with a tool set that has changed since
                    raise _ToolFailed(f"no child task was named for {tool.capability!r} at step {n + 1}")
                outcome["task_id"] = child
                result = await self._run_child(child, tool.capability, args)
            outcome["result"] = self._bounded(result)
        except (_ToolFailed, SwarmrayError, ValidationError, ValueError) as e:
            outcome["error"] = f"{type(e).__name__}: {e}" if not isinstance(e, _ToolFailed) else str(e)
        steps.add(outcome)
        return outcome

    async def _run_child(self, task_id: str, capability: str, args: dict[str, Any]) -> Any:
        tasks = self.context.tasks
        # Submitted again on resume: a queen accepts a task id once, so this never runs it twice.
        await tasks.submit(Task(id=task_id, capability=capability, payload=args))
        res = await tasks.result(task_id, self.tool_timeout_s)
        if not res.status.final:
            raise _ToolFailed(f"task {task_id} ({capability}) did not end in {self.tool_timeout_s:g} s")
        if not res.ok:
            raise _ToolFailed(f"task {task_id} ({capability}) {res.status.value}: {res.error}")
        return res.output

    def _bounded(self, result: Any) -> Any:
        text = json.dumps(result)
        if len(text) <= self.max_result_chars:
            return result
        return f"{text[: self.max_result_chars]}… [cut: the result had {len(text)} characters]"

    # -- the built-in tools ---------------------------------------------------------------

    async def _search_facts(self, task: Task, n: int, call_id: str, args: dict) -> Any:
        a = SearchFactsArgs.model_validate(args)
        body = {"query": a.query, "k": a.k, "mode": self.facts_mode, "namespaces": self.facts_namespaces}
        found = await self.facts.post(self.context, "search", body)
        return {
            "facts": [h["fact"]["sentence"] for h in found["facts"]],
            "passages": [{"title": p["title"], "text": p["text"]} for p in found["passages"]],
        }

    async def _recall_memory(self, task: Task, n: int, call_id: str, args: dict) -> Any:
        a = RecallMemoryArgs.model_validate(args)
        hits = await self.context.memory.search(a.query, a.k, scope=self.memory_scope)
        return [{"id": h["record"]["id"], "text": h["record"]["text"]} for h in hits]

    async def _store_memory(self, task: Task, n: int, call_id: str, args: dict) -> Any:
        a = StoreMemoryArgs.model_validate(args)
        # Named after the call: a store repeated on resume replaces the record, never adds one.
        record_id = f"{task.id}/{n}/{call_id}"
        namespace = self.context.swarm if self.memory_scope == "swarm" else "global"
        (stored,) = await self.context.memory.upsert(
            [{"id": record_id, "namespace": namespace, "text": a.text}], scope=self.memory_scope
        )
        return {"id": stored}


def function_tool(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI tool spec of function `name` whose arguments follow the JSON Schema `parameters`."""
    # A payload model's title and docstring are for its developers; the function has its name
    # and description, and every model call prefills its tools (LangChain drops them too).
    shown = {k: v for k, v in parameters.items() if k not in ("title", "description")}
    description = description or parameters.get("description") or ""
    function = {"name": name, "description": description, "parameters": shown}
    return {"type": "function", "function": function}
