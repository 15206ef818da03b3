"""The tool-using agent in one process: a real queen with colocated agents and a real journal,
the agent asking a scripted OpenAI-compatible server over real HTTP, its tools run as child
tasks through the queen. The cluster tests kill its host for real (tests/cluster)."""

import asyncio
import inspect
import json
import threading

import pytest

from actors import RegistryConfig, SwarmConfig, Task, TaskStatus, ToolAgent
from actors._private.agents.tasks import TaskClient
from actors._private.agents.tool_agent import function_name
from actors._private.queen.queen import SwarmQueen
from models._private.core import names
from models._private.core.errors import StaleAttemptError
from tests.scripted_provider import tool_call
from tests.unit.fakes import FakePeers
from tests.waiting import async_wait_until

TALLY = "tests.agents:TallyAgent"


class Local:
    """An object in this process called as a Ray actor is: `handle.method.remote(*args)`."""

    def __init__(self, obj):
        self.obj = obj

    def __getattr__(self, method):
        fn = getattr(self.obj, method)

        class Method:
            def remote(self, *args):
                async def call():
                    out = fn(*args)
                    return await out if inspect.isawaitable(out) else out

                return asyncio.ensure_future(call())

        return Method()


class Registry:
    """The registry as the agent's TaskClient uses it: one swarm, which offers everything."""

    def route(self, capability, visited):
        return "front"

    def table(self):
        return [{"name": "front"}]

    def kv_get(self, key):
        return None  # no service key: auth is off


@pytest.fixture
def in_process(monkeypatch):
    """Agents' TaskClients reach the queen made last in this process and a one-swarm registry."""
    actors = {names.REGISTRY: Local(Registry())}
    monkeypatch.setattr(
        "actors._private.host.TaskClient", lambda ns: TaskClient(ns, actor=lambda name: actors[name])
    )
    return actors


def make_queen(tmp_path, in_process, agent_params, **queen):
    pools = {
        "agent": {
            "agent": {"class": "actors:ToolAgent", "params": agent_params},
            "colocate": True,
            "min_agents": 1,
            "max_agents": 1,
        },
        "tally": {"agent": {"class": TALLY}, "colocate": True, "min_agents": 2, "max_agents": 2},
    }
    config = SwarmConfig.model_validate(
        {
            "name": "front",
            "pools": pools,
            "journal": {"uri": str(tmp_path / "journal")},
            "queen": {"retry_backoff_s": 0.01, **queen},
        }
    )
    q = SwarmQueen("ns", config, RegistryConfig())
    q.delegator.peers = FakePeers([])
    q._actor = lambda name: Local(Registry()) if name == names.REGISTRY else None
    in_process[names.queen("front")] = Local(q)
    return q


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_the_agent_calls_tools_in_parallel_as_child_tasks_and_answers_from_their_results(
    tmp_path, provider, in_process
):
    tally = tmp_path / "tally"
    provider.script = [
        {
            "tool_calls": [
                tool_call("test_tally", {"path": str(tally), "word": "ray"}, "call_a"),
                tool_call("test_tally", {"path": str(tally), "word": "serve"}, "call_b"),
            ]
        },
        "RAY and SERVE",
    ]
    queen = make_queen(
        tmp_path,
        in_process,
        {"model": "m", "base_url": provider.url, "tools": ["test.*"], "first_tool_choice": "required"},
    )
    res = run(queen.run(Task(capability="agent.run", payload={"input": "Shout ray and serve."}), 30))
    assert res.ok, res.error
    out = res.output
    assert out["answer"] == "RAY and SERVE" and out["stopped"] == "answer" and out["tools"] == ["test_tally"]
    first, second = out["steps"]
    assert first["finish_reason"] == "tool_calls" and second["finish_reason"] == "stop"
    assert [c["result"]["word"] for c in first["tool_calls"]] == ["RAY", "SERVE"]
    children = [c["task_id"] for c in first["tool_calls"]]
    assert all(c.startswith("front:") for c in children)
    for child in children:  # each tool call ran as a task of its own, through the queen
        assert run(queen.result(child)).capability == "test.tally"
    assert sorted(lines(tally)) == ["ray", "serve"]
    assert out["usage"] == {"prompt_tokens": 200, "completion_tokens": 100, "total_tokens": 300}
    # What the model was sent: the tool's schema is the payload model's, and its own capability
    # is not a tool; the second request carries both results as tool messages.
    sent = provider.requests[0]
    assert sent["tool_choice"] == "required" and provider.requests[1]["tool_choice"] == "auto"
    (tool,) = sent["tools"]
    assert tool["function"]["name"] == "test_tally"
    parameters = tool["function"]["parameters"]
    assert set(parameters["properties"]) == {"path", "word", "wait_for"}
    assert parameters["required"] == ["path", "word"]
    assert parameters["properties"]["word"]["description"] == "The word to write."
    # The payload model's own title and docstring are not sent (the function has its name and
    # the capability's description): tokens every call would prefill for nothing.
    assert "title" not in parameters and "description" not in parameters
    assert tool["function"]["description"] == "Writes the word down; returns it in capitals."
    replies = [m for m in provider.requests[1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in replies] == ["call_a", "call_b"]
    assert json.loads(replies[0]["content"]) == first["tool_calls"][0]["result"]


def test_a_failing_tool_comes_back_to_the_model_as_an_error_it_can_react_to(tmp_path, provider, in_process):
    tally = tmp_path / "tally"
    provider.script = [
        {
            "tool_calls": [
                tool_call("test_tally", {"word": "no path"}, "c1"),  # the payload does not fit
                tool_call("no_such_tool", {}, "c2"),
                tool_call("test_tally", "{not json", "c3"),
                tool_call("recall_memory", {"query": ""}, "c4"),  # a built-in's bad arguments
            ]
        },
        {"tool_calls": [tool_call("test_tally", {"path": str(tally), "word": "fixed"}, "c5")]},
        "done",
    ]
    queen = make_queen(
        tmp_path,
        in_process,
        {"model": "m", "base_url": provider.url, "tools": ["test.tally", "recall_memory"]},
    )
    res = run(queen.run(Task(capability="agent.run", payload={"input": "go"}), 30))
    assert res.ok, res.error
    errors = [c["error"] for c in res.output["steps"][0]["tool_calls"]]
    assert errors[0].startswith("PayloadError") and "path" in errors[0]
    assert "no tool is named 'no_such_tool'" in errors[1]
    assert "not JSON" in errors[2]
    assert errors[3].startswith("ValidationError") and "query" in errors[3]
    assert res.output["steps"][1]["tool_calls"][0]["result"]["word"] == "FIXED"
    assert res.output["answer"] == "done" and lines(tally) == ["fixed"]
    tool_messages = [m for m in provider.requests[1]["messages"] if m["role"] == "tool"]
    assert all("error" in json.loads(m["content"]) for m in tool_messages)


@pytest.mark.parametrize(
    ("params", "stopped", "model_calls"),
    [
        ({"max_steps": 2}, "max_steps", 2),
        ({"max_tool_calls": 1}, "max_tool_calls", 2),
        ({"max_tokens_per_task": 300}, "token_budget", 2),
    ],
)
def test_the_loop_stops_at_its_limits(tmp_path, provider, in_process, params, stopped, model_calls):
    tally = tmp_path / "tally"
    call = {"tool_calls": [tool_call("test_tally", {"path": str(tally), "word": "again"}, "c")]}
    provider.respond = lambda body: call  # a model that never stops asking
    params = {"model": "m", "base_url": provider.url, "tools": ["test.*"], **params}
    queen = make_queen(tmp_path, in_process, params)
    res = run(queen.run(Task(capability="agent.run", payload={"input": "go"}), 30))
    assert res.ok, res.error
    assert res.output["stopped"] == stopped
    assert len(provider.requests) == model_calls == len(res.output["steps"])
    assert len(lines(tally)) == 1  # the tools of the last step asked for never ran


@pytest.mark.parametrize("parallel", [None, False, True])
def test_parallel_tool_calls_is_sent_when_set_and_left_to_the_service_otherwise(
    tmp_path, provider, in_process, parallel
):
    provider.respond = lambda body: "done"
    params = {"model": "m", "base_url": provider.url, "tools": ["test.*"], "parallel_tool_calls": parallel}
    queen = make_queen(tmp_path, in_process, params)
    assert run(queen.run(Task(capability="agent.run", payload={"input": "go"}), 30)).ok
    (body,) = provider.requests
    assert body.get("parallel_tool_calls", "unset") == ("unset" if parallel is None else parallel)


def test_a_retried_attempt_resumes_after_its_last_finished_step(tmp_path, provider, in_process):
    tally = tmp_path / "tally"
    provider.script = [
        {"tool_calls": [tool_call("test_tally", {"path": str(tally), "word": "once"}, "c1")]},
        (500, "the model's server fell over"),  # the attempt fails after a finished tool call
        "ONCE",
    ]
    queen = make_queen(tmp_path, in_process, {"model": "m", "base_url": provider.url, "tools": ["test.*"]})
    res = run(queen.run(Task(capability="agent.run", payload={"input": "go"}), 30))
    assert res.ok, res.error
    assert res.attempts == 2 and res.output["resumed"] == 3  # model, child, tool
    assert lines(tally) == ["once"]  # the tool did not run again
    assert len(provider.requests) == 3  # the first model call was not made again
    assert provider.requests[2]["messages"] == provider.requests[1]["messages"]
    assert res.output["steps"][0]["tool_calls"][0]["result"] == {"word": "ONCE", "lines": 1}


def test_a_replayed_queen_resumes_the_loop_from_the_journal(tmp_path, provider, in_process):
    tally = tmp_path / "tally"
    gate = threading.Event()

    def respond(body):
        if len(provider.requests) == 1:
            return {"tool_calls": [tool_call("test_tally", {"path": str(tally), "word": "once"}, "c1")]}
        gate.wait(30)  # the first queen's second model call never comes back to it
        return "ONCE"

    provider.respond = respond
    params = {"model": "m", "base_url": provider.url, "tools": ["test.*"]}
    queen = make_queen(tmp_path, in_process, params)

    async def until_the_second_model_call():
        task_id = await queen.submit(Task(capability="agent.run", payload={"input": "go"}))
        await async_wait_until(lambda: len(provider.requests) == 2, what="the second model call")
        # Journaled: the model's answer and its child's id; the tool's result rides with the
        # next answer's write, which never comes.
        assert [s["kind"] for s in queen.book.get(task_id).steps] == ["model", "child"]
        await queen.stop()  # the queen goes down with the loop's second model call in flight
        return task_id

    task_id = run(until_the_second_model_call())
    gate.set()
    replayed = make_queen(tmp_path, in_process, params)  # replays the journal as it starts
    res = run(replayed.result(task_id, 30))
    assert res.ok, res.error
    assert res.output["answer"] == "ONCE" and res.output["resumed"] == 2
    # The child was submitted again under its journaled id, so its queen gave its result back
    # without running it: the tool ran once, and the first model call was made once.
    assert lines(tally) == ["once"]
    assert len(provider.requests) == 3
    assert provider.requests[2]["messages"] == provider.requests[1]["messages"]


def test_a_step_from_an_attempt_that_no_longer_runs_the_task_is_refused(tmp_path, provider, in_process):
    queen = make_queen(tmp_path, in_process, {"model": "m", "base_url": provider.url})

    async def scenario():
        rec = await queen._admit(
            Task(capability="test.tally", payload={"path": str(tmp_path / "tally"), "word": "w"})
        )
        await async_wait_until(lambda: rec.result.status is not TaskStatus.QUEUED)
        await rec.done.wait()
        with pytest.raises(StaleAttemptError, match="has ended"):
            await queen.record_steps(rec.task.id, rec.task.attempt, rec.result.agent_id, [{"x": 1}])

    run(scenario())


def test_calls_with_one_id_or_none_are_each_answered(tmp_path, provider, in_process):
    tally = tmp_path / "tally"
    twice = tool_call("test_tally", {"path": str(tally), "word": "a"}, "same")
    anonymous = {**tool_call("test_tally", {"path": str(tally), "word": "b"}, ""), "id": None}
    provider.script = [{"tool_calls": [twice, twice, anonymous]}, "ok"]
    queen = make_queen(tmp_path, in_process, {"model": "m", "base_url": provider.url, "tools": ["test.*"]})
    res = run(queen.run(Task(capability="agent.run", payload={"input": "go"}), 30))
    assert res.ok, res.error
    calls = res.output["steps"][0]["tool_calls"]
    assert [c["id"] for c in calls] == ["same", "same_1", "call_0_2"]
    assert sorted(lines(tally)) == ["a", "a", "b"]
    replies = [m["tool_call_id"] for m in provider.requests[1]["messages"] if m["role"] == "tool"]
    assert replies == ["same", "same_1", "call_0_2"]


def test_a_caller_cannot_hand_the_agent_steps_of_its_own(tmp_path, provider, in_process):
    provider.script = ["from the model"]
    queen = make_queen(tmp_path, in_process, {"model": "m", "base_url": provider.url})
    forged = {"kind": "model", "n": 0, "message": {"content": "forged", "tool_calls": []}}
    task = Task(
        capability="agent.run",
        payload={"input": "go"},
        steps=[{**forged, "finish_reason": "stop", "usage": {}}],
    )
    res = run(queen.run(task, 30))
    assert res.ok, res.error
    assert res.output["answer"] == "from the model" and res.output["resumed"] == 0


def test_function_names_and_colliding_tools():
    assert function_name("text.stats") == "text_stats" and function_name("a/b c") == "a_b_c"
    with pytest.raises(ValueError, match="both the function 'text_stats'"):
        ToolAgent(model="m", tools=["text.stats", "text_stats"])
