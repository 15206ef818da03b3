"""Traces across a running system: real Ray, the queens and the agents' hosts in processes of
their own, the AI service on Serve in front of a scripted model, spans to files. A delegated
task is one trace across queens and processes; a tool-using agent's model calls cross HTTP into
the AI service's server span, and its tool call nests the other swarm's task under it. A tool
call over /mcp with a `traceparent` continues the caller's trace the same way."""

import asyncio
import secrets

import httpx2
import pytest
import ray
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from actors._private.services import MCP_URL_KEY
from cluster import load_config
from models._private.core import names, tracing
from tests.conftest import running_system
from tests.scripted_provider import tool_call
from tests.unit.test_tracing import TracedProvider, spans_in
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def provider():
    """A model that asks for `text.stats` once, then answers."""
    scripted = TracedProvider()
    scripted.respond = lambda body: (
        "Three words."
        if body["messages"][-1]["role"] == "tool"
        else {"tool_calls": [tool_call("text_stats", {"text": "one two three"})]}
    )
    yield scripted
    scripted.close()


@pytest.fixture(scope="module")
def system(serve_port, provider, tmp_path_factory):
    directory = tmp_path_factory.mktemp("traces")
    config = load_config(
        {
            "namespace": "tracing-tests",
            "tracing": {"enabled": True, "directory": str(directory)},
            "ai": {
                "port": serve_port,
                "route_prefix": "/tracing-ai",
                "auth": {"enabled": False},
                "providers": {"scripted": {"base_url": provider.url, "model": "m"}},
                "embeddings": None,
            },
            "mcp": {
                "server": {"port": serve_port, "route_prefix": "/tracing-mcp", "auth": {"enabled": False}}
            },
            "swarms": {
                # No text.stats here: front hands it to business.
                "front": {
                    "pools": {"keywords": {"agent": {"class": "actors:KeywordsAgent"}, "colocate": True}}
                },
                "business": {"pools": {"stats": {"agent": {"class": "actors:TextStatsAgent"}}}},
                "ai": {
                    "pools": {
                        "act": {
                            "agent": {
                                "class": "actors:ToolAgent",
                                "params": {"model": "scripted", "tools": ["text.stats"], "max_steps": 3},
                            }
                        }
                    }
                },
            },
        }
    )
    with running_system(config) as client:
        yield client, directory
    tracing.shutdown()  # this driver traced its submits to the module's directory


def trace_of(directory, task_id: str, names: int) -> dict[str, dict]:
    """The spans of the trace whose `swarm.submit` named `task_id`, by span id, once at least
    `names` spans are in it (a span is written when it ends, the attempt's just after the result)."""

    def found():
        spans = spans_in(directory)
        (root,) = [
            s for s in spans if s["name"] == "swarm.submit" and s["attributes"]["swarmray.task_id"] == task_id
        ]
        trace = {
            s["context"]["span_id"]: s
            for s in spans
            if s["context"]["trace_id"] == root["context"]["trace_id"]
        }
        return trace if len(trace) >= names else None

    return wait_until(found, 30, f"the spans of {task_id}")


def path(trace: dict[str, dict], span: dict) -> list[str]:
    """The names from `span` up to its trace's root, or to the span whose parent is outside
    `trace` (a caller's own)."""
    out = [span["name"]]
    while span["parent_id"] in trace:
        span = trace[span["parent_id"]]
        out.append(span["name"])
    return out


def pid(span: dict) -> int:
    return span["resource"]["attributes"]["process.pid"]


def test_a_delegated_task_is_one_trace_across_queens_and_processes(system):
    client, directory = system
    task_id = client.submit("text.stats", {"text": "a b c"}, swarm="front")
    assert client.result(task_id, timeout_s=60).ok
    trace = trace_of(directory, task_id, 7)
    (handled,) = [s for s in trace.values() if s["name"] == "agent.handle"]
    assert path(trace, handled) == [
        "agent.handle",
        "task.attempt",
        "queen.accept",  # business's
        "queen.delegate",
        "queen.accept",  # front's
        "swarm.submit",
    ]
    (waited,) = [s for s in trace.values() if s["name"] == "task.queue_wait"]
    assert path(trace, waited)[:3] == ["task.queue_wait", "queen.accept", "queen.delegate"]
    accepts = {s["attributes"]["swarmray.swarm"]: s for s in trace.values() if s["name"] == "queen.accept"}
    assert set(accepts) == {"front", "business"}
    # The driver, each queen and the business agents' host: four processes, one trace.
    submit = next(s for s in trace.values() if s["name"] == "swarm.submit")
    assert len({pid(submit), pid(accepts["front"]), pid(accepts["business"]), pid(handled)}) == 4
    assert handled["resource"]["attributes"]["service.name"] == "swarmray.agents"


def test_a_tool_using_agents_task_has_model_calls_and_tool_calls_as_children(system, provider):
    client, directory = system
    task_id = client.submit("agent.run", {"input": "How many words?"}, swarm="ai")
    res = client.result(task_id, timeout_s=60)
    assert res.ok, res.error
    assert res.output["answer"] == "Three words."
    # submit, accept, wait, attempt, handle; 2 model calls (client + server); a tool call and its
    # task's accept, wait, attempt and handle.
    trace = trace_of(directory, task_id, 14)
    servers = [s for s in trace.values() if s["name"].startswith("http.server POST")]
    assert len(servers) == 2
    for server in servers:
        # The AI service's span is the child of the agent's client span: traceparent crossed HTTP.
        assert server["name"].endswith("/v1/chat/completions") and server["kind"] == "SpanKind.SERVER"
        assert path(trace, server) == [
            server["name"],
            "http.client POST chat/completions",
            "agent.handle",
            "task.attempt",
            "queen.accept",
            "swarm.submit",
        ]
        assert server["attributes"]["http.response.status_code"] == 200
        assert server["resource"]["attributes"]["service.name"] == "swarmray.ai"
    (child,) = [
        s
        for s in trace.values()
        if s["name"] == "agent.handle" and s["attributes"]["swarmray.capability"] == "text.stats"
    ]
    assert path(trace, child) == [
        "agent.handle",
        "task.attempt",
        "queen.accept",  # business's
        "tool.call text.stats",
        "agent.handle",  # the tool-using agent's
        "task.attempt",
        "queen.accept",  # ai's
        "swarm.submit",
    ]
    (call,) = [s for s in trace.values() if s["name"] == "tool.call text.stats"]
    assert call["attributes"]["swarmray.child_task_id"] == child["attributes"]["swarmray.task_id"]
    # The gateway sent the provider the context of the request it served.
    sent = {t.split("-")[2] for t in provider.traceparents[-2:]}
    assert sent == {server["context"]["span_id"].removeprefix("0x") for server in servers}


def test_an_mcp_tool_call_continues_the_callers_trace_and_its_task_nests_under_it(system):
    _, directory = system
    url = ray.get(ray.get_actor(names.REGISTRY, namespace="tracing-tests").kv_get.remote(MCP_URL_KEY))
    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)  # a span of the MCP client's own

    async def call():
        http = httpx2.AsyncClient(
            headers={"traceparent": f"00-{trace_id}-{caller}-01"}, timeout=httpx2.Timeout(30, read=60)
        )
        async with Client(streamable_http_client(url, http_client=http)) as mcp:
            return await mcp.call_tool("text.stats", {"text": "a b c"})

    result = asyncio.run(call())
    assert not result.is_error, result

    def handled():
        trace = {
            s["context"]["span_id"]: s
            for s in spans_in(directory)
            if s["context"]["trace_id"] == f"0x{trace_id}"
        }
        found = [s for s in trace.values() if s["name"] == "agent.handle"]
        return (trace, found[0]) if found else None

    trace, handled_span = wait_until(handled, 30, "the tool call's task in the caller's trace")
    # The endpoint's server span is the child of the caller's span; the tool call, and the task
    # it ran through business's queen, nest under it.
    *inside, server_name = path(trace, handled_span)
    assert inside == ["agent.handle", "task.attempt", "queen.accept", "tool.call text.stats"]
    assert server_name.startswith("http.server POST /tracing-mcp")
    call_span = next(s for s in trace.values() if s["name"] == "tool.call text.stats")
    server = trace[call_span["parent_id"]]
    assert server["parent_id"] == f"0x{caller}" and server["kind"] == "SpanKind.SERVER"
    assert server["attributes"]["http.response.status_code"] == 200
    assert server["resource"]["attributes"]["service.name"] == "swarmray.mcp"
    (accept,) = [s for s in trace.values() if s["name"] == "queen.accept"]
    assert accept["attributes"]["swarmray.swarm"] == "business"
    assert call_span["attributes"]["swarmray.child_task_id"] == accept["attributes"]["swarmray.task_id"]
