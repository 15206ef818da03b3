"""MCP both ways on a real system, as `swarm up` brings it up from a config with `mcp:`: the
federation of the example server (over stdio, in an actor of its own), the swarm `mcp` that runs
its tools as tasks, the `/mcp` endpoint, the `swarm mcp` commands, the demo's MCP calls, and
`down` taking all of it away; an HTTP upstream (the example server over Streamable HTTP in a
subprocess) beside it; a tool-using agent of another swarm calling a federated tool, and a
federated task sent to that other swarm's queen, delegated to `mcp`. Needs the federation
(actors) and the endpoint (serve)."""

import asyncio
import contextlib
import json
import re
import subprocess
import sys

import pytest
import ray

from actors._private.services import MCP_URL_KEY
from cluster import Client, down, load_config, up
from cluster._private.connection import call, registry_of
from cluster._private.credentials import user_key
from cluster._private.demo import _TEXT, _show_mcp_calls
from cluster._private.endpoints import url_here
from models._private.core import names
from tests.conftest import free_port, user_env
from tests.scripted_provider import ScriptedProvider, tool_call
from tests.unit.test_mcp_federation import http_example  # noqa: F401 (a fixture used here)

TEXT = "Three words here."


@pytest.fixture(scope="module")
def provider():
    """The tool-using agent's model: asks for the federated word count, then answers with the
    count the tool's result holds (so the answer can only come from that result)."""
    p = ScriptedProvider()

    def respond(body):
        results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        if not results:
            return {"tool_calls": [tool_call("mcp_example_word_count", {"text": TEXT}, "c1")]}
        return f"{re.search(r'words[^0-9]*([0-9]+)', results[0]).group(1)} words"

    p.respond = respond
    yield p
    p.close()


@pytest.fixture(scope="module")
def system(head, tmp_path_factory, http_example, provider):  # noqa: F811
    from ray import serve

    from serve import AIServiceConfig
    from serve._private.service import running_http_options

    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})  # unless Serve runs already
    _, port = running_http_options(AIServiceConfig())
    namespace = f"mcp-{free_port()}"
    config = load_config(
        {
            "namespace": namespace,
            "swarms": {
                "front": {
                    "pools": {
                        "text": {"agent": {"class": "actors:TextStatsAgent"}, "colocate": True},
                        "act": {
                            "agent": {
                                "class": "actors:ToolAgent",
                                "params": {
                                    "model": "m",
                                    "base_url": provider.url,
                                    "tools": ["mcp.example.*"],
                                },
                            },
                            "colocate": True,
                        },
                    }
                }
            },
            "mcp": {
                "server": {"port": port, "auth": {"path": str(tmp_path_factory.mktemp("keys"))}},
                "servers": {
                    "example": {"command": ["python", "-m", "actors._private.mcp.example_server"]},
                    "web": {"url": http_example},
                },
                "federation": {"agents": 1},
            },
        }
    )
    up(config)
    yield config, Client(namespace), head["address"]
    with contextlib.suppress(Exception):  # taken down by the last test already
        down(namespace)


def swarm_mcp(system, *args, check=True):
    config, _, address = system
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cluster",
            "mcp",
            *args,
            "--namespace",
            config.namespace,
            "--address",
            address,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=user_env(),
    )
    if check and proc.returncode != 0:
        pytest.fail(f"swarm mcp {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_up_runs_the_federation_its_stdio_upstream_and_the_swarm_of_its_tools(system):
    config, client, _ = system
    named = {
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == config.namespace
    }
    assert {names.MCP_FEDERATION, names.mcp_stdio("example"), names.queen("mcp")} <= named
    servers = json.loads(swarm_mcp(system, "servers", "--json").stdout)
    assert sorted((s["name"], s["kind"], s["healthy"]) for s in servers) == [
        ("example", "stdio", True),
        ("web", "http", True),
    ]
    tools = {t["capability"]: t for t in json.loads(swarm_mcp(system, "tools", "--json").stdout)}
    assert tools["mcp.example.word_count"]["state"] == "approved"  # first use pins it
    catalog = {e["capability"]: e for e in client.capabilities()}
    counted = catalog["mcp.example.word_count"]
    assert counted["swarm"] == "mcp" and counted["pools"] == ["tools"]
    assert counted["schema"]["properties"]["text"]["type"] == "string"
    assert "mcp.example.*" not in catalog and catalog["text.stats"]["swarm"] == "front"
    state = client.status()  # the generated swarm is one of the system's, and the endpoint's URL
    assert [s["swarm"] for s in state["swarms"]] == ["front", "mcp"] and not state["missing"]
    assert state["mcp"]["url"].endswith("/mcp") and sorted(state["mcp"]["servers"]) == ["example", "web"]


def test_swarm_mcp_call_runs_a_federated_tool_and_a_capability_through_the_queen(system):
    counted = json.loads(
        swarm_mcp(
            system, "call", "mcp.example.word_count", "--input", json.dumps({"text": TEXT}), "--json"
        ).stdout
    )
    assert counted["isError"] is False and counted["structuredContent"]["words"] == 3
    direct = json.loads(
        swarm_mcp(
            system,
            "call",
            "mcp.example.word_count",
            "--input",
            json.dumps({"text": TEXT}),
            "--direct",
            "--json",
        ).stdout
    )
    assert direct["structuredContent"] == counted["structuredContent"]
    stats = swarm_mcp(system, "call", "text.stats", "--input", json.dumps({"text": TEXT}))
    assert json.loads(stats.stdout.splitlines()[0])["words"] == 3
    wrong = swarm_mcp(system, "call", "mcp.example.no_such_tool", check=False)
    assert wrong.returncode == 1 and wrong.stdout.startswith("error result:\nfailed: McpUnknownToolError")


def test_an_http_upstream_is_listed_and_called_through_swarm_mcp_call(system):
    tools = {t["capability"]: t for t in json.loads(swarm_mcp(system, "tools", "--json").stdout)}
    assert tools["mcp.web.sha256"]["server"] == "web"
    digest = json.loads(
        swarm_mcp(system, "call", "mcp.web.sha256", "--input", json.dumps({"text": "abc"}), "--json").stdout
    )
    assert digest["isError"] is False
    assert digest["structuredContent"]["result"].startswith("ba7816bf")  # SHA-256 of "abc"


def test_a_federated_task_sent_to_another_swarms_queen_is_delegated_to_the_mcp_swarm(system):
    _, client, _ = system
    res = client.result(client.submit("mcp.example.word_count", {"text": TEXT}, swarm="front"), timeout_s=60)
    assert res.ok, res.error
    assert res.task_id.startswith("front:") and res.swarm == "mcp"
    assert res.output["structuredContent"]["words"] == 3


def test_the_tool_agent_calls_a_federated_tool_as_a_child_task_and_answers_from_its_result(system, provider):
    _, client, _ = system
    res = client.result(
        client.submit("agent.run", {"input": "How many words?"}, swarm="front"), timeout_s=120
    )
    assert res.ok, res.error
    offered = {t["function"]["name"] for t in provider.requests[0]["tools"]}
    assert "mcp_example_word_count" in offered and "mcp_web_sha256" not in offered  # its pattern only
    assert res.output["answer"] == "3 words" and res.output["stopped"] == "answer"
    (called,) = res.output["steps"][0]["tool_calls"]
    child = client.result(called["task_id"])
    assert child.ok and child.capability == "mcp.example.word_count" and child.swarm == "mcp"


def test_the_endpoint_lists_a_capabilitys_output_schema_and_annotations(system):
    config, _, _ = system
    import httpx2
    from mcp import Client as McpClient
    from mcp.client.streamable_http import streamable_http_client

    from models._private.core.names import bearer

    url = url_here(call(lambda: registry_of(config.namespace).kv_get.remote(MCP_URL_KEY)))

    async def listed():
        http = httpx2.AsyncClient(headers=bearer(user_key(config.namespace)), timeout=30)
        async with McpClient(streamable_http_client(url, http_client=http)) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
        await http.aclose()
        return tools

    stats = asyncio.run(listed())["text.stats"]  # TextStatsAgent declares both
    assert stats.output_schema["properties"]["words"]["type"] == "integer"
    assert stats.annotations.read_only_hint is True and stats.annotations.idempotent_hint is True


def test_swarm_mcp_approve_pins_a_tool_again_and_has_nothing_else_to_approve(system):
    refused = swarm_mcp(system, "approve", "example", "word_count", "--hash", "0" * 64, check=False)
    assert refused.returncode != 0 and "differs" in refused.stdout + refused.stderr
    assert swarm_mcp(system, "approve", "example", "word_count").stdout.split() == ["mcp.example.word_count"]
    assert swarm_mcp(system, "approve", "example").stdout.strip() == "nothing to approve on 'example'"


def test_the_endpoint_answers_the_demos_calls_with_the_sdk_client(system, capsys):
    config, _, _ = system
    assert _show_mcp_calls(config.namespace)
    shown = capsys.readouterr().out
    counted, stats = shown.split("\nmcp.example.word_count: ")[1].split("\ntext.stats: ")
    words = f'"words": {len(_TEXT.split())}'  # the demo's text, counted by the tool and by the agent
    assert words in counted and words in stats


def test_down_removes_the_federation_its_upstreams_and_the_endpoint(system):
    config, _, _ = system
    removed = down(config.namespace)
    assert {names.MCP_FEDERATION, names.mcp_stdio("example"), names.queen("mcp")} <= set(removed)
    assert f"Serve application {names.mcp_app_name(config.namespace)}" in removed
    left = {
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == config.namespace
    }
    assert not left
