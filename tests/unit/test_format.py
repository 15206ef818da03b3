"""How a task's result reads in `swarm result`, `swarm submit --wait` and the demo."""

import json

from actors._private.task import TaskResult, TaskStatus, Timings
from cluster._private.format import format_result


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
