"""Plain text for people: the `swarm` commands' tables and task results, and the demo's."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from models._private.core.tool_results import tool_error, tool_result

if TYPE_CHECKING:
    from actors._private.task import TaskResult

__all__ = [
    "FACTS_COLUMNS",
    "SWARM_COLUMNS",
    "agents_by_state",
    "call_tool_result",
    "facts_rows",
    "format_call_tool_result",
    "format_capabilities",
    "format_mcp_servers",
    "format_mcp_tools",
    "format_result",
    "format_search",
    "format_status",
    "format_table",
    "format_trace",
    "progress_bars",
    "swarm_row",
]

# The columns both status views (`swarm status` and its --watch) show first of a swarm, and of
# each facts namespace; each view adds its own after them.
SWARM_COLUMNS = ["swarm", "health", "queued", "running", "done", "failed"]
FACTS_COLUMNS = ["namespace", "documents", "entities", "facts", "pending", "failed"]


def swarm_row(swarm: dict[str, Any]) -> dict[str, Any]:
    """The SWARM_COLUMNS of one swarm of `status`: failed counts the timed out too."""
    tasks = swarm["tasks"]
    return {
        "swarm": swarm["swarm"],
        "health": swarm["health"].get("health", "?"),
        "queued": swarm["queued"],
        "running": swarm["running"],
        "done": tasks["succeeded"],
        "failed": tasks["failed"] + tasks["timed_out"],
    }


def agents_by_state(swarm: dict[str, Any]) -> dict[str, int]:
    """How many of a swarm's agents are in each state, by state name."""
    by_state: dict[str, int] = {}
    for a in swarm["agents"]:
        by_state[a["state"]] = by_state.get(a["state"], 0) + 1
    return dict(sorted(by_state.items()))


def facts_rows(facts: dict[str, Any]) -> list[dict[str, Any]]:
    """The FACTS_COLUMNS of each namespace of the facts service's status: pending counts the
    documents not yet indexed too."""
    return [
        {
            **n,
            "pending": n["extraction"]["pending"] + n["unindexed"],
            "failed": n["extraction"]["failed"],
        }
        for n in facts["namespaces"]
    ]


@contextmanager
def progress_bars(transient: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """Progress bars on standard error, one per `what`, moved by calling the yielded
    `progress(what, done, total)` (a total of 0 is not known yet); none where standard error is
    not a terminal (a log file, a pipe), which only the outcome should reach."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda what, done, total: None
        return
    columns = (TextColumn("{task.description:<36}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bars: dict[str, Any] = {}
    with Progress(*columns, console=console, transient=transient) as shown:

        def progress(what: str, done: int, total: int) -> None:
            if what not in bars:
                bars[what] = shown.add_task(what, total=total or None)
            shown.update(bars[what], completed=done, total=total or None)

        yield progress


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Left-aligned text columns with a header row."""
    cells = [[c.upper() for c in columns]] + [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells)
    return "\n".join(line.rstrip() for line in lines)


def format_result(result: TaskResult) -> str:
    """A task's outcome as `swarm result`, `swarm submit --wait` and the demo print it: a line of
    how it ended, in how long, on which agent of which swarm (and whether the swarm it was sent
    to, its id's prefix, delegated it), then its output, or its error, as JSON, wrapped."""
    t = result.timings
    took = f"{(t.finished_at - t.submitted_at) * 1000:.1f} ms" if t.finished_at else "-"
    sent_to = result.task_id.partition(":")[0]
    moved = f", delegated to {result.swarm}" if result.swarm and result.swarm != sent_to else ""
    head = (
        f"{result.capability}: {result.status.value} in {took} on {result.agent_id or '-'} "
        f"(sent to {sent_to}{moved}; {result.task_id})"
    )
    shown = result.output if result.ok else result.error
    if shown is None and not result.ok:  # not ended yet: nothing to show below
        return head
    if result.ok and _is_trace(shown):
        return head + "\n" + format_trace(shown)
    body = json.dumps(shown, ensure_ascii=False, default=str)
    return head + "\n" + textwrap.fill(body, 100, initial_indent="    ", subsequent_indent="    ")


def _is_trace(output: Any) -> bool:
    return isinstance(output, dict) and {"answer", "stopped", "steps", "usage"} <= output.keys()


def _clip(value: Any, width: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def format_trace(output: dict[str, Any]) -> str:
    """A tool-using agent's output (`ToolAgent`): each step, its tool calls (the function, its
    arguments, the child task that ran it, the result or error), then the answer and totals."""
    lines = []
    calls = 0
    for step in output["steps"]:
        tokens = (step.get("usage") or {}).get("total_tokens", "?")
        if not step["tool_calls"] and step.get("finish_reason") == "tool_calls":
            # The answer asked for tools, and a limit kept them from running.
            stopped = output["stopped"]
            lines.append(f"step {step['n'] + 1} ({tokens} tokens) asked for tools, not run ({stopped})")
            continue
        if not step["tool_calls"]:
            said = "" if step["content"] is None else f": {_clip(step['content'], 80)}"
            lines.append(f"step {step['n'] + 1} ({tokens} tokens) answered{said}")
            continue
        lines.append(f"step {step['n'] + 1} ({tokens} tokens) called {len(step['tool_calls'])} tool(s)")
        for call in step["tool_calls"]:
            calls += 1
            ran = f" [{call['task_id']}]" if call.get("task_id") else ""
            got = f"error: {_clip(call['error'], 80)}" if "error" in call else _clip(call.get("result"), 80)
            lines.append(f"  {call['name']}({_clip(call.get('arguments') or '', 60)}){ran} -> {got}")
    usage = output["usage"]
    resumed = f", {output['resumed']} steps resumed from earlier attempts" if output.get("resumed") else ""
    lines.append(
        f"stopped: {output['stopped']} after {len(output['steps'])} model calls and {calls} tool calls, "
        f"{usage.get('total_tokens', 0)} tokens{resumed}"
    )
    answer = json.dumps(output["answer"], ensure_ascii=False)
    lines.append(textwrap.fill(f"answer: {answer}", 100, subsequent_indent="  "))
    return "\n".join("    " + line for line in "\n".join(lines).splitlines())


def format_status(state: dict[str, Any]) -> str:
    """The `swarm status` tables: one row per swarm, then one per agent."""
    swarms, agents = [], []
    for s in state["swarms"]:
        agents += [{**a, "swarm": s["swarm"]} for a in s["agents"]]
        swarms.append(
            {
                **swarm_row(s),
                "agents": " ".join(f"{n} {k}" for k, n in agents_by_state(s).items()),
                "strategy": s["supervision"]["strategy"],
                "restarts": "{restarts_in_window}/{max_restarts} in {period_s:g}s".format(**s["supervision"]),
                "capabilities": ", ".join(s["capabilities"]),
            }
        )
    notes = [
        f"{s['swarm']}: {s['supervision']['reason'] or s['health'].get('reason')}"
        for s in state["swarms"]
        if s["supervision"]["state"] == "failed" or s["health"].get("reason")
    ]
    notes += [f"{m['swarm']}: {m['reason']}" for m in state.get("missing", [])]
    return (
        f"namespace {state['namespace']}\n\n"
        + format_table(swarms, [*SWARM_COLUMNS, "agents", "strategy", "restarts", "capabilities"])
        + "".join(f"\n  {note}" for note in notes)
        + "\n\n"
        + format_table(
            agents, ["agent", "swarm", "state", "node", "inflight", "done", "failed", "restarts", "reason"]
        )
        + (_format_ai(state["ai"]) if state.get("ai") else "")
        + (_format_facts(state["facts"]) if state.get("facts") else "")
        + (_format_mcp(state["mcp"]) if state.get("mcp") else "")
    )


def _format_mcp(mcp: dict[str, Any]) -> str:
    servers = ", ".join(mcp.get("servers") or []) or "none"
    return f"\n\nMCP endpoint: {mcp['url']}\n  federated MCP servers: {servers} (`swarm mcp servers`)"


def _format_ai(ai: dict[str, Any]) -> str:
    line = f"\n\nAI service (OpenAI-compatible): {ai['url']}"
    return line + "".join(f"\n  {name}: {source}" for name, source in ai.get("models", {}).items())


def _format_facts(facts: dict[str, Any]) -> str:
    line = f"\n\nFacts service: {facts['url']}"
    if facts.get("error"):
        return f"{line}\n  {facts['error']}"
    table = format_table(facts_rows(facts), FACTS_COLUMNS)
    return f"{line}\n{table}"


def format_search(found: dict[str, Any]) -> str:
    """A facts search's answer: its facts with when they held (or, of one that states no start,
    when it was learnt), then its passages."""
    facts = [
        {
            "score": f"{h['score']:.3f}",
            "fact": h["fact"]["sentence"],
            "when": _held(h["fact"]),
            "documents": ", ".join(sorted({p["document_id"] for p in h["fact"]["provenance"]})),
        }
        for h in found["facts"]
    ]
    passages = [
        {
            "score": f"{h['score']:.3f}",
            "document": h["document_id"],
            "title": h["title"],
            "text": h["text"][:80].replace("\n", " ") + ("…" if len(h["text"]) > 80 else ""),
        }
        for h in found["passages"]
    ]
    return (
        format_table(facts, ["score", "fact", "when", "documents"])
        + "\n\n"
        + format_table(passages, ["score", "document", "title", "text"])
    )


def _held(fact: dict[str, Any]) -> str:
    """'1867-01-01 .. now', '2020-01-01 .. 2024-01-01'; of a fact that states no start, when it
    was learnt ('learnt 2026-12-06'), and its end if it has one."""
    end = (fact["invalid_at"] or "now")[:10]
    if fact["valid_at"] is not None:
        return f"{fact['valid_at'][:10]} .. {end}"
    learnt = f"learnt {fact['created_at'][:10]}"
    return learnt if fact["invalid_at"] is None else f"? .. {end}, {learnt}"


def format_capabilities(entries: list[dict[str, Any]], fields: bool) -> str:
    """The `swarm capabilities` table; with `fields`, each capability's payload fields below it.
    A family its agents could not list (`prefix.*`) says why after its description."""
    rows = [
        {
            **e,
            "pools": ", ".join(e["pools"]),
            "description": f"{e['description']} [{e['note']}]" if e.get("note") else e["description"],
        }
        for e in entries
    ]
    if not fields:
        return format_table(rows, ["capability", "swarm", "pools", "description"])
    blocks = []
    for e in rows:
        head = f"{e['capability']}  (swarm {e['swarm']}, pools {e['pools']})\n  {e['description']}"
        if e.get("annotations"):
            head += "\n  annotations: " + ", ".join(f"{k}={v}" for k, v in e["annotations"].items())
        if e.get("output_schema"):
            head += "\n  output: " + _output_summary(e["output_schema"])
        schema = e["schema"]
        if schema is None:
            blocks.append(f"{head}\n  payload: not declared by its agent (any JSON object)")
            continue
        required = set(schema.get("required", []))
        lines = [
            {
                "field": f"  {name}",
                "type": _json_type(prop, schema.get("$defs", {})),
                "required": "required"
                if name in required
                else f"default {prop.get('default')!r}"
                if "default" in prop
                else "optional",
                "description": prop.get("description", ""),
            }
            for name, prop in schema.get("properties", {}).items()
        ]
        extra = "" if schema.get("additionalProperties") is False else "\n  (other fields allowed)"
        blocks.append(f"{head}\n{format_table(lines, ['field', 'type', 'required', 'description'])}{extra}")
    return "\n\n".join(blocks)


def _output_summary(schema: dict[str, Any]) -> str:
    """An output JSON Schema in one line: an object's fields with their types, else its type."""
    props = schema.get("properties")
    if not props:
        return _json_type(schema, schema.get("$defs", {}))
    return ", ".join(f"{name}: {_json_type(p, schema.get('$defs', {}))}" for name, p in props.items())


def _json_type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    """A JSON Schema property's type in a few characters: `list[number]`, `string | null`."""
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        inner = ", ".join(defs.get(name, {}).get("properties", {}))
        return f"{{{inner}}}" if inner else name
    if "anyOf" in prop:
        return " | ".join(_json_type(p, defs) for p in prop["anyOf"])
    if "enum" in prop:
        return " | ".join(repr(v) for v in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list[{_json_type(prop.get('items', {}), defs)}]"
    return kind


# -- MCP ------------------------------------------------------------------------------------------


def format_mcp_servers(rows: list[dict[str, Any]]) -> str:
    """The `swarm mcp servers` table: one upstream a row, where it is and how it does."""
    shown = [
        {
            **r,
            "target": r.get("url") or " ".join(r.get("command") or []),
            "healthy": "yes" if r.get("healthy") else "no",
            "p50_ms": "-" if r.get("p50_ms") is None else f"{r['p50_ms']:g}",
            "last_error": _clip(r.get("last_error") or "", 60),
        }
        for r in rows
    ]
    columns = ["name", "kind", "group", "target", "healthy", "breaker", "in_flight", "p50_ms", "tools"]
    return format_table(shown, [*columns, "restarts", "last_error"])


def format_mcp_tools(rows: list[dict[str, Any]]) -> str:
    """The `swarm mcp tools` table: each upstream tool's capability, where it comes from, and
    whether it is offered (approved) or held back (pending, changed, collision)."""
    # The full current hash: what `swarm mcp approve SERVER TOOL --hash H` expects.
    shown = [
        {**r, "description": _clip(r.get("description") or "", 60), "hash": r.get("current_hash") or ""}
        for r in rows
    ]
    ordered = sorted(shown, key=lambda r: (r.get("capability") or "", r.get("server") or ""))
    return format_table(ordered, ["capability", "server", "group", "tool", "state", "hash", "description"])


def call_tool_result(result: TaskResult) -> dict[str, Any]:
    """A task's outcome as an MCP CallToolResult (JSON): a federated tool's own result as it
    came; another capability's output as JSON text (and `structuredContent` for an object); a
    task that did not succeed as an error result."""
    if not result.ok:
        why = f"{result.status.value}: {result.error_type or 'error'}: {result.error or ''}".rstrip(": ")
        return tool_error(why)
    return tool_result(result.output)  # an McpToolAgent's output is the upstream's CallToolResult


def format_call_tool_result(result: dict[str, Any]) -> str:
    """A CallToolResult for people: each content block (text as it is, other kinds named with
    their size or URI), then the structured content when no text block already shows it."""
    lines = ["error result:"] if result.get("isError") else []
    texts = []
    for block in result.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
            lines.append(block.get("text", ""))
        elif kind in ("image", "audio"):
            lines.append(f"[{kind} {block.get('mimeType', '?')}, {len(block.get('data', ''))} base64 chars]")
        elif kind == "resource_link":
            lines.append(f"[resource link {block.get('uri', '?')}]")
        elif kind == "resource":
            inner = block.get("resource") or {}
            lines.append(f"[resource {inner.get('uri', '?')}] {inner.get('text', '')}".rstrip())
        else:
            lines.append(json.dumps(block))
    structured = result.get("structuredContent")
    if structured is not None:
        shown = json.dumps(structured)
        if not any(_same_json(t, structured) for t in texts):
            lines.append(f"structured: {shown}")
    return "\n".join(lines)


def _same_json(text: str, value: Any) -> bool:
    try:
        return json.loads(text) == value
    except ValueError:
        return False
