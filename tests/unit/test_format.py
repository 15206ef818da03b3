"""How a task's result reads in `swarm result`, `swarm submit --wait` and the demo."""

import json

from actors._private.task import TaskResult, TaskStatus, Timings
from cluster._private.format import (
    call_tool_result,
    format_call_tool_result,
    format_capabilities,
    format_mcp_servers,
    format_mcp_tools,
    format_result,
)


def test_a_delegated_success_reads_as_one_line_then_its_output():
    result = TaskResult(
        task_id="ai:1f0c",
        capability="math.stats",
        status=TaskStatus.SUCCEEDED,
        output={"mean": 2.0, "note": "é"},
        agent_id="business.math.0",
        swarm="business",
        attempts=1,
        timings=Timings(submitted_at=1000.0, started_at=1000.004, finished_at=1000.0123),
    )
    assert format_result(result) == (
        "math.stats: succeeded in 12.3 ms on business.math.0 (sent to ai, delegated to business; ai:1f0c)\n"
        '    {"mean": 2.0, "note": "é"}'
    )


def test_a_failure_shows_its_error_instead_of_an_output():
    result = TaskResult(
        task_id="storage:9a",
        capability="data.validate",
        status=TaskStatus.FAILED,
        error="schema is not a JSON Schema",
        agent_id="storage.data.1",
        swarm="storage",
        timings=Timings(submitted_at=5.0, started_at=5.5, finished_at=7.0),
    )
    assert format_result(result) == (
        "data.validate: failed in 2000.0 ms on storage.data.1 (sent to storage; storage:9a)\n"
        '    "schema is not a JSON Schema"'
    )


def test_a_task_not_ended_is_one_line():
    result = TaskResult(
        task_id="ai:77", capability="text.stats", status=TaskStatus.QUEUED, timings=Timings(submitted_at=1.0)
    )
    assert format_result(result) == "text.stats: queued in - on - (sent to ai; ai:77)"


def test_a_long_output_is_wrapped_and_indented_whole():
    words = [f"word{i}" for i in range(60)]
    result = TaskResult(
        task_id="ai:5", capability="text.keywords", status=TaskStatus.SUCCEEDED, output={"keywords": words}
    )
    head, *body = format_result(result).splitlines()
    assert head.startswith("text.keywords: succeeded in - on - (sent to ai; ai:5)")
    assert len(body) > 1 and all(line.startswith("    ") and len(line) <= 100 for line in body)
    assert " ".join(line.strip() for line in body) == json.dumps({"keywords": words})


def test_a_tool_using_agents_output_reads_as_its_steps():
    output = {
        "answer": "360 = 2^3 * 3^2 * 5",
        "stopped": "answer",
        "steps": [
            {
                "n": 0,
                "content": None,
                "finish_reason": "tool_calls",
                "usage": {"total_tokens": 150},
                "tool_calls": [
                    {
                        "id": "call_1",
                        "name": "math_factorize",
                        "arguments": '{"n": 360}',
                        "task_id": "business:7f",
                        "result": {"n": 360, "factors": [2, 2, 2, 3, 3, 5]},
                    },
                    {"id": "call_2", "name": "nope", "arguments": "{}", "error": "no tool is named 'nope'"},
                ],
            },
            {
                "n": 1,
                "content": "360 = 2^3 * 3^2 * 5",
                "finish_reason": "stop",
                "usage": {"total_tokens": 90},
                "tool_calls": [],
            },
        ],
        "usage": {"prompt_tokens": 200, "completion_tokens": 40, "total_tokens": 240},
        "resumed": 3,
        "tools": ["math_factorize"],
    }
    result = TaskResult(task_id="ai:5", capability="agent.run", status=TaskStatus.SUCCEEDED, output=output)
    assert format_result(result).splitlines() == [
        "agent.run: succeeded in - on - (sent to ai; ai:5)",
        "    step 1 (150 tokens) called 2 tool(s)",
        '      math_factorize({"n": 360}) [business:7f] -> {"n": 360, "factors": [2, 2, 2, 3, 3, 5]}',
        "      nope({}) -> error: no tool is named 'nope'",
        "    step 2 (90 tokens) answered: 360 = 2^3 * 3^2 * 5",
        "    stopped: answer after 2 model calls and 2 tool calls, 240 tokens, 3 steps resumed from earlier "
        "attempts",
        '    answer: "360 = 2^3 * 3^2 * 5"',
    ]


def test_a_step_whose_tool_calls_a_limit_kept_from_running_does_not_read_as_an_answer():
    # The loop stopped at max_steps: the last answer asked for tools, none ran.
    step = {"n": 0, "content": None, "finish_reason": "tool_calls", "usage": {"total_tokens": 70}}
    output = {
        "answer": None,
        "stopped": "max_steps",
        "steps": [{**step, "tool_calls": []}],
        "usage": {"total_tokens": 70},
        "resumed": 0,
        "tools": ["math_factorize"],
    }
    result = TaskResult(task_id="ai:6", capability="agent.run", status=TaskStatus.SUCCEEDED, output=output)
    assert format_result(result).splitlines()[1] == (
        "    step 1 (70 tokens) asked for tools, not run (max_steps)"
    )


def test_a_family_its_agents_could_not_list_shows_why_after_its_description():
    entries = [
        {"capability": "echo.a", "swarm": "s", "pools": ["p"], "description": "echoes", "schema": None},
        {
            "capability": "mcp.ev.*",
            "swarm": "mcp",
            "pools": ["tools"],
            "description": "Calls a federated tool.",
            "schema": None,
            "note": "its capabilities could not be listed: timed out",
        },
    ]
    lines = format_capabilities(entries, fields=False).splitlines()
    assert lines[1].split() == ["echo.a", "s", "p", "echoes"]
    assert lines[2].endswith("Calls a federated tool. [its capabilities could not be listed: timed out]")


def _ended(status, output=None, error=None, error_type=None):
    return TaskResult(
        task_id="mcp:1",
        capability="mcp.ev.echo",
        status=status,
        output=output,
        error=error,
        error_type=error_type,
        timings=Timings(submitted_at=1.0, started_at=1.0, finished_at=1.1),
    )


def test_a_federated_tools_result_is_its_own_call_tool_result_and_another_output_becomes_one():
    upstream = {"content": [{"type": "text", "text": "Echo: hi"}], "isError": False}
    assert call_tool_result(_ended(TaskStatus.SUCCEEDED, upstream)) == upstream
    stats = call_tool_result(_ended(TaskStatus.SUCCEEDED, {"words": 3}))
    assert stats == {
        "content": [{"type": "text", "text": '{"words": 3}'}],
        "structuredContent": {"words": 3},
        "isError": False,
    }
    assert format_call_tool_result(stats) == '{"words": 3}'  # the structured copy is not repeated
    failed = call_tool_result(
        _ended(TaskStatus.FAILED, error="no such tool", error_type="McpUnknownToolError")
    )
    assert failed == {
        "content": [{"type": "text", "text": "failed: McpUnknownToolError: no such tool"}],
        "isError": True,
    }
    assert format_call_tool_result(failed) == "error result:\nfailed: McpUnknownToolError: no such tool"


def test_a_call_tool_result_reads_block_by_block():
    result = {
        "content": [
            {"type": "text", "text": "two blocks"},
            {"type": "image", "mimeType": "image/png", "data": "iVBORw0KGgo="},
            {"type": "resource_link", "uri": "file:///x.txt", "name": "x"},
        ],
        "structuredContent": {"n": 2},
    }
    assert format_call_tool_result(result).splitlines() == [
        "two blocks",
        "[image image/png, 12 base64 chars]",
        "[resource link file:///x.txt]",
        'structured: {"n": 2}',
    ]


def test_the_mcp_tables_show_each_server_and_tool():
    servers = format_mcp_servers(
        [
            {
                "name": "example",
                "kind": "stdio",
                "group": "example",
                "url": None,
                "command": ["python", "-m", "actors._private.mcp.example_server"],
                "healthy": True,
                "breaker": "closed",
                "in_flight": 0,
                "p50_ms": 1.25,
                "tools": 3,
                "restarts": 0,
                "last_error": None,
            }
        ]
    ).splitlines()
    assert servers[0].split() == [
        "NAME", "KIND", "GROUP", "TARGET", "HEALTHY", "BREAKER", "IN_FLIGHT", "P50_MS", "TOOLS", "RESTARTS",
        "LAST_ERROR",
    ]  # fmt: skip
    assert servers[1].split() == [
        "example", "stdio", "example", "python", "-m", "actors._private.mcp.example_server", "yes",
        "closed", "0", "1.25", "3", "0",
    ]  # fmt: skip
    tools = format_mcp_tools(
        [
            {
                "capability": "mcp.ev.b",
                "server": "ev",
                "group": "ev",
                "tool": "b",
                "state": "changed",
                "current_hash": "b" * 64,
            },
            {
                "capability": "mcp.ev.a",
                "server": "ev",
                "group": "ev",
                "tool": "a",
                "state": "approved",
                "current_hash": "a" * 64,
            },
        ]
    ).splitlines()
    assert tools[0].split()[5] == "HASH"
    assert [line.split() for line in tools[1:]] == [
        ["mcp.ev.a", "ev", "ev", "a", "approved", "a" * 64],
        ["mcp.ev.b", "ev", "ev", "b", "changed", "b" * 64],
    ]


def test_a_capabilitys_annotations_and_output_fields_are_shown_under_it():
    entry = {
        "capability": "text.stats",
        "swarm": "ai",
        "pools": ["stats"],
        "description": "counts",
        "schema": None,
        "annotations": {"readOnlyHint": True},
        "output_schema": {"properties": {"words": {"type": "integer"}, "top": {"type": "array"}}},
    }
    lines = format_capabilities([entry], fields=True).splitlines()
    assert lines[2:4] == ["  annotations: readOnlyHint=True", "  output: words: integer, top: list[any]"]
