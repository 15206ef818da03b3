"""A tool-using agent whose process dies mid-loop resumes on retry from its last finished step:
real Ray, its tool a capability of another swarm, its model a scripted OpenAI-compatible
server, every tool run and model call counted."""

import json
import re
import threading

import pytest
import ray

from benchmarks._chaos import kill_queen
from cluster import load_config
from tests.cluster.test_cli import swarm
from tests.conftest import running_system
from tests.scripted_provider import ScriptedProvider, tool_call
from tests.waiting import wait_until


@pytest.fixture
def provider():
    p = ScriptedProvider()
    yield p
    p.close()


def config(namespace, tmp_path, provider):
    fast = {"retry_backoff_s": 0.05, "max_retries": 2}
    return load_config(
        {
            "namespace": namespace,
            "swarms": {
                "agents": {
                    "queen": fast,
                    "journal": {"uri": str(tmp_path / "journal")},
                    "pools": {
                        "agent": {
                            "agent": {
                                "class": "actors:ToolAgent",
                                "params": {"model": "m", "base_url": provider.url, "tools": ["test.*"]},
                            },
                            "min_agents": 1,
                            "max_agents": 1,
                        }
                    },
                },
                "tools": {
                    "queen": fast,
                    "journal": {"uri": str(tmp_path / "journal")},
                    "pools": {"tally": {"agent": {"class": "tests.agents:TallyAgent"}}},
                },
            },
        }
    )


@pytest.mark.parametrize("kill", ["host", "queen"])
def test_an_agent_killed_between_steps_resumes_without_running_a_finished_step_again(
    head, namespace, tmp_path, provider, kill
):
    tally = tmp_path / "tally"
    gate = threading.Event()

    def respond(body):
        if len(provider.requests) == 1:
            return {"tool_calls": [tool_call("test_tally", {"path": str(tally), "word": "once"}, "c1")]}
        if len(provider.requests) == 2:
            gate.wait(60)  # the killed attempt's second model call: its answer goes nowhere
        return "ONCE"

    provider.respond = respond
    with running_system(config(namespace, tmp_path, provider)) as client:
        task_id = client.submit("agent.run", {"input": "Write once down."}, swarm="agents")
        # The model answered, the tool ran in the other swarm: the loop's second model call has
        # started.
        wait_until(lambda: len(provider.requests) == 2, 60, "the second model call")
        if kill == "host":
            (host,) = [h for _, h, _ in client._call(client.queen("agents").hosts.remote)]
            ray.kill(host, no_restart=True)
        else:
            kill_queen(client, "agents", "process")  # its hosts go with it
        gate.set()
        res = client.result(task_id, timeout_s=120)
        assert res.ok, res.error
        out = res.output
        assert out["answer"] == "ONCE" and out["stopped"] == "answer"
        # Journaled before the kill: the model's answer and its child task's id (the tool's
        # result rides with the next answer's write); the child, submitted again under that id,
        # was not run again: its queen answered with its result.
        assert out["resumed"] == 2
        assert tally.read_text().splitlines() == ["once"]
        assert len(provider.requests) == 3  # the first model call was not made again
        assert provider.requests[2]["messages"] == provider.requests[1]["messages"]
        (call,) = out["steps"][0]["tool_calls"]
        assert call["task_id"].startswith("tools:") and call["result"] == {"word": "ONCE", "lines": 1}


def test_an_agent_killed_while_its_tool_runs_waits_for_that_tool_instead_of_running_it_again(
    head, namespace, tmp_path, provider
):
    tally, gate = tmp_path / "tally", tmp_path / "gate"
    args = {"path": str(tally), "word": "once", "wait_for": str(gate)}
    provider.script = [{"tool_calls": [tool_call("test_tally", args, "c1")]}, "ONCE"]
    with running_system(config(namespace, tmp_path, provider)) as client:
        task_id = client.submit("agent.run", {"input": "Write once down."}, swarm="agents")
        # The child task runs (its line is written) and waits at the gate; its id is journaled.
        wait_until(lambda: tally.exists() and tally.read_text() == "once\n", 60, "the tool to start")
        (host,) = [h for _, h, _ in client._call(client.queen("agents").hosts.remote)]
        ray.kill(host, no_restart=True)
        gate.touch()
        res = client.result(task_id, timeout_s=120)
        assert res.ok, res.error
        assert res.output["resumed"] == 2  # the model's answer and the child's id
        (call,) = res.output["steps"][0]["tool_calls"]
        assert call["result"] == {"word": "ONCE", "lines": 1}
        assert tally.read_text().splitlines() == ["once"]  # the resumed loop waited for that child
        assert len(provider.requests) == 2  # each model call made once
        child = client.result(call["task_id"])
        assert child.ok and child.attempts == 1


def test_swarm_submit_wait_shows_the_agents_steps(head, namespace, tmp_path, provider):
    tally = tmp_path / "tally"
    provider.script = [
        {"tool_calls": [tool_call("test_tally", {"word": "swarm", "path": str(tally)}, "c1")]},
        "It wrote SWARM.",
    ]
    with running_system(config(namespace, tmp_path, provider)):
        ns = ["--namespace", namespace, "--address", head["address"]]
        question = json.dumps({"input": "Write swarm down."})
        shown = swarm("submit", "agent.run", "--input", question, "--swarm", "agents", "--wait", *ns).stdout
    head_line, *steps = shown.strip().splitlines()
    assert head_line.startswith("agent.run: succeeded in ") and "on agents.agent.0" in head_line
    assert steps[0] == "    step 1 (150 tokens) called 1 tool(s)"
    assert re.fullmatch(
        r'      test_tally\(\{"word": "swarm", "path": "/.*\) \[tools:[0-9a-f]{16}\] -> '
        r'\{"word": "SWARM", "lines": 1\}',
        steps[1],
    ), steps[1]
    assert steps[2:] == [
        "    step 2 (150 tokens) answered: It wrote SWARM.",
        "    stopped: answer after 2 model calls and 1 tool calls, 300 tokens",
        '    answer: "It wrote SWARM."',
    ]
