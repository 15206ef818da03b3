"""benchmarks.fleet replays the chat requests its agents sent through the engine in-process:
they are rebuilt from each task's output (`benchmarks._fleet.chat_requests`). Here a real queen
runs a real ToolAgent against a scripted service, which keeps every body it was sent; the
rebuilt requests must be those bodies."""

from actors import Task
from benchmarks._fleet import chat_requests
from tests.scripted_provider import tool_call
from tests.unit import test_tool_agent
from tests.unit.test_tool_agent import make_queen, run

in_process = test_tool_agent.in_process  # the fixture: agents reach a queen made in this process


def sent(provider):
    return [{k: v for k, v in body.items() if k != "user"} for body in provider.requests]


def test_the_requests_rebuilt_from_a_task_output_are_the_bodies_the_agent_sent(
    tmp_path, provider, in_process
):
    tally = tmp_path / "tally"
    provider.script = [
        {
            "tool_calls": [
                tool_call("test_tally", {"path": str(tally), "word": "ray"}, "call_a"),
                tool_call("no_such_tool", {}, "call_b"),  # an error goes back as a tool message
            ]
        },
        {"tool_calls": [tool_call("test_tally", {"path": str(tally), "word": "serve"}, "call_c")]},
        "done",
    ]
    params = {
        "model": "m",
        "base_url": provider.url,
        "tools": ["test.tally"],
        "system": "Use the tools.",
        "first_tool_choice": "required",
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "max_steps": 3,
        "max_tokens": 40,
    }
    queen = make_queen(tmp_path, in_process, params)
    res = run(queen.run(Task(capability="agent.run", payload={"input": "Write ray, then serve."}), 30))
    assert res.ok and res.output["stopped"] == "answer", res.error
    assert len(provider.requests) == 3
    tools = provider.requests[0]["tools"]
    assert chat_requests(params, tools, "Write ray, then serve.", res.output) == sent(provider)


def test_a_named_first_choice_and_no_system_message_are_rebuilt_as_sent(tmp_path, provider, in_process):
    provider.script = [
        {"tool_calls": [tool_call("test_tally", {"path": str(tmp_path / "t"), "word": "x"})]},
        "ok",
    ]
    params = {
        "model": "m",
        "base_url": provider.url,
        "tools": ["test.tally"],
        "first_tool_choice": "test_tally",
        "tool_choice": "none",
        "max_steps": 2,
        "temperature": 0.5,
    }
    queen = make_queen(tmp_path, in_process, params)
    res = run(queen.run(Task(capability="agent.run", payload={"input": "go"}), 30))
    assert res.ok, res.error
    rebuilt = chat_requests(params, provider.requests[0]["tools"], "go", res.output)
    assert rebuilt == sent(provider)
    assert rebuilt[0]["tool_choice"] == {"type": "function", "function": {"name": "test_tally"}}
