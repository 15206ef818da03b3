"""The /mcp endpoint's pure pieces, without Ray: tools from catalog entries, what a limited key
sees, the Host and Origin checks, results, the guard's rule, and the ASGI app's answers that
need no system (Host, Origin, methods, the protected-resource metadata)."""

import asyncio

import httpx
import pytest

from serve import McpServiceConfig
from serve._private.auth.keys import KeyRecord, matches_any
from serve._private.auth.middleware import mcp_rule
from serve._private.mcp.routes import McpEndpoint
from serve._private.mcp.tools import (
    allowed_swarms,
    builtin_tools,
    call_result,
    error_result,
    facts_namespaces,
    host_allowed,
    origin_allowed,
    tools_from_catalog,
    visible,
)

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
CATALOG = [
    {
        "capability": "math.factorize",
        "swarm": "a",
        "description": "Prime factors.",
        "pools": ["p"],
        "schema": SCHEMA,
    },
    {
        "capability": "math.factorize",
        "swarm": "b",
        "description": "Prime factors.",
        "pools": ["q"],
        "schema": SCHEMA,
    },
    {"capability": "text.stats", "swarm": "b", "description": "", "pools": ["s"], "schema": None},
    {
        "capability": "mcp.everything.echo",
        "swarm": "mcp",
        "description": "Echoes.",
        "pools": [],
        "payload_schema": {"type": "object", "properties": {"message": {"type": "string"}}},
        "output_schema": {"type": "object", "properties": {"echo": {"type": "string"}}},
        "annotations": {"readOnlyHint": True},
    },
    {
        "capability": "mcp.everything.*",
        "swarm": "mcp",
        "description": "a family",
        "pools": [],
        "schema": None,
    },
]


def key(**limits):
    return KeyRecord(id="k", name="k", hash="h", hint="x", scopes=["mcp:call"], created_at=0, **limits)


def test_each_capability_is_one_tool_whatever_number_of_swarms_offers_it():
    tools = tools_from_catalog(CATALOG)
    assert set(tools) == {"math.factorize", "text.stats", "mcp.everything.echo"}  # no family
    assert tools["math.factorize"].swarms == ["a", "b"]
    assert tools["math.factorize"].tool() == {
        "name": "math.factorize",
        "description": "Prime factors.",
        "inputSchema": SCHEMA,
    }


def test_a_capability_without_payload_model_takes_any_object_and_gets_a_description():
    tool = tools_from_catalog(CATALOG)["text.stats"].tool()
    assert tool["inputSchema"] == {"type": "object"}
    assert tool["description"] == "The capability text.stats."


def test_a_federated_entry_keeps_its_output_schema_and_annotations():
    tool = tools_from_catalog(CATALOG)["mcp.everything.echo"].tool()
    assert tool["outputSchema"]["properties"] == {"echo": {"type": "string"}}
    assert tool["annotations"] == {"readOnlyHint": True}
    assert tool["inputSchema"]["properties"] == {"message": {"type": "string"}}


def test_a_capability_cannot_shadow_a_builtin_tool():
    tools = tools_from_catalog([{"capability": "recall_memory", "swarm": "x", "description": "evil"}])
    assert tools == {}


def test_a_key_limited_by_capability_patterns_sees_only_matching_tools():
    tools = {**tools_from_catalog(CATALOG), **builtin_tools()}
    limited = key(capabilities=["math.*", "recall_memory"])
    assert {n for n, t in tools.items() if visible(limited, t)} == {"math.factorize", "recall_memory"}
    assert all(visible(None, t) for t in tools.values())  # auth off
    assert all(visible(key(), t) for t in tools.values())  # no lists


def test_a_key_limited_to_swarms_sees_capabilities_some_allowed_swarm_offers_and_the_builtins():
    tools = {**tools_from_catalog(CATALOG), **builtin_tools()}
    only_a = key(swarms=["a"])
    assert {n for n, t in tools.items() if visible(only_a, t)} == {
        "math.factorize",
        "search_facts",
        "recall_memory",
    }
    assert allowed_swarms(only_a, ["a", "b"]) == ["a"]  # b is routed around
    assert allowed_swarms(key(swarms=["m*"]), ["mcp", "a"]) == ["mcp"]


def test_limits_are_fnmatch_patterns_and_none_allows_all():
    assert matches_any(None, "anything")
    assert matches_any(["text.*"], "text.stats") and not matches_any(["text.*"], "textual")
    assert not matches_any([], "text.stats")
    assert key(swarms=["a"]).limited and key(capabilities=["x"]).limited and not key().limited


def test_search_facts_searches_the_namespaces_the_key_may_use_and_tells_nothing_of_others():
    existing = ["open", "secret", "shared"]
    tenant = key(namespaces=["open", "shared"])
    assert facts_namespaces(None, existing, None) == existing
    assert facts_namespaces(tenant, existing, None) == ["open", "shared"]
    assert facts_namespaces(tenant, existing, ["shared", "shared"]) == ["shared"]
    with pytest.raises(ValueError, match="may not use the namespace 'secret'"):
        facts_namespaces(tenant, existing, ["open", "secret"])
    with pytest.raises(ValueError, match="may not use the namespace 'nowhere'"):  # not "does not exist"
        facts_namespaces(tenant, existing, ["nowhere"])
    with pytest.raises(
        ValueError, match=r"no facts namespace 'nowhere'; this key may search open, secret, shared"
    ):
        facts_namespaces(None, existing, ["nowhere"])
    with pytest.raises(ValueError, match="may use no facts namespace"):
        facts_namespaces(key(namespaces=[]), existing, None)
    with pytest.raises(ValueError, match="non-empty list"):
        facts_namespaces(None, existing, "open")


@pytest.mark.parametrize(
    "host, allowed",
    [
        ("127.0.0.1:8000", True),
        ("localhost:8000", True),
        ("[::1]:8000", True),
        ("LOCALHOST", True),
        ("mcp.example.com:443", True),  # the configured host, any port
        ("api.internal:8000", True),  # allowed_hosts, with its port
        ("api.internal:9000", False),
        ("evil.example:8000", False),
        ("", False),
        (None, False),
    ],
)
def test_the_host_header_must_name_this_server(host, allowed):
    assert host_allowed(host, ["mcp.example.com"], ["api.internal:8000"]) is allowed


@pytest.mark.parametrize(
    "origin, allowed",
    [
        (None, True),  # not a browser
        ("http://localhost:3000", True),
        ("http://127.0.0.1", True),
        ("https://[::1]:8443", True),
        ("https://app.example.com", True),
        ("https://app.example.com:8443", True),  # "…:*"
        ("HTTPS://App.Example.COM", True),  # scheme and host are case-insensitive
        ("https://APP.example.com:8443", True),
        ("https://evil.example", False),
        ("null", False),
        ("file://", False),
    ],
)
def test_the_origin_must_be_loopback_or_listed(origin, allowed):
    assert origin_allowed(origin, ["https://app.example.com", "https://App.Example.com:*"]) is allowed


def test_an_output_is_json_text_and_structured_only_with_an_output_schema():
    assert call_result({"factors": [2, 3]}, None) == {
        "content": [{"type": "text", "text": '{"factors": [2, 3]}'}],
        "isError": False,
    }
    with_schema = call_result({"echo": "hi"}, {"type": "object"})
    assert with_schema["structuredContent"] == {"echo": "hi"}
    assert call_result([1, 2], {"type": "object"}) == {
        "content": [{"type": "text", "text": "[1, 2]"}],
        "isError": False,
    }


def test_a_call_tool_result_output_passes_through_unchanged():
    federated = {"content": [{"type": "text", "text": "no"}], "isError": True, "structuredContent": {"a": 1}}
    assert call_result(federated, None) == federated
    assert error_result("why") == {"content": [{"type": "text", "text": "why"}], "isError": True}


def test_the_metadata_is_open_and_everything_else_needs_the_mcp_scope():
    assert mcp_rule("GET", "/.well-known/oauth-protected-resource") == (None, False, None)
    assert mcp_rule("POST", "/") == ("mcp:call", False, None)
    assert mcp_rule("GET", "/.well-known/other") == ("mcp:call", False, None)


# -- the ASGI app, answering before it needs the system ------------------------------------------


@pytest.fixture
def endpoint():
    config = McpServiceConfig(auth={"enabled": False}, allowed_origins=["https://app.example.com"])
    app = McpEndpoint(config, "unit")
    transport = httpx.ASGITransport(app=app, root_path="/mcp")
    return transport


def send(endpoint, method, path, **kw):
    transport = endpoint

    async def request():
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
            return await c.request(method, "/mcp" + path, **kw)

    return asyncio.run(request())


def test_a_foreign_host_is_421_and_a_foreign_origin_403(endpoint):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    r = send(endpoint, "POST", "", json=body, headers={"Host": "evil.example"})
    assert r.status_code == 421
    r = send(endpoint, "POST", "", json=body, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "evil.example" in r.text


def test_get_and_delete_are_405_and_other_paths_404(endpoint):
    assert (send(endpoint, "GET", "")).status_code == 405
    assert (send(endpoint, "DELETE", "")).headers["allow"] == "POST"
    assert (send(endpoint, "GET", "/elsewhere")).status_code == 404


def test_the_protected_resource_metadata_names_the_endpoint(endpoint):
    r = send(
        endpoint,
        "GET",
        "/.well-known/oauth-protected-resource",
        headers={"Origin": "https://app.example.com"},
    )
    assert r.status_code == 200
    assert r.json()["resource"] == "http://127.0.0.1:8000/mcp"
    assert r.json()["bearer_methods_supported"] == ["header"]


def test_a_dead_session_manager_is_replaced_and_one_that_cannot_start_is_a_503_json_rpc_error():
    # The real ASGI app and SDK session manager; `initialize` needs no system (no Ray).
    app = McpEndpoint(McpServiceConfig(auth={"enabled": False}), "unit")
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream"}

    class NotStarting:  # a manager whose run() fails, as the SDK's does when its task group cannot start
        def run(self):
            raise RuntimeError("cannot start")

    async def main():
        transport = httpx.ASGITransport(app=app, root_path="/mcp")
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
            first = await c.post("/mcp", json=body, headers=headers)
            app._running.cancel()  # the manager's task dies
            await asyncio.gather(app._running, return_exceptions=True)
            after_death = await c.post("/mcp", json=body, headers=headers)
            app._running.cancel()
            await asyncio.gather(app._running, return_exceptions=True)
            real = app._new_manager
            app._new_manager = NotStarting
            refused = await c.post("/mcp", json=body, headers=headers)
            app._new_manager = real
            recovered = await c.post("/mcp", json=body, headers=headers)
            await app.stop()
            return first, after_death, refused, recovered

    first, after_death, refused, recovered = asyncio.run(main())
    assert first.status_code == 200 and "serverInfo" in first.text
    assert after_death.status_code == 200 and "serverInfo" in after_death.text
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == -32603 and "cannot start" in refused.json()["error"]["message"]
    assert recovered.status_code == 200 and "serverInfo" in recovered.text


# -- the built-in tools' failures are tool errors (isError), not protocol errors -------------------


class _Remote:
    """An actor method as a handle gives it (`.remote(...)`, awaited): here, a plain function."""

    def __init__(self, f):
        self.f = f

    async def remote(self, *args, **kw):
        return self.f(*args, **kw)


class _Actor:
    def __init__(self, **methods):
        for name, f in methods.items():
            setattr(self, name, _Remote(f))


def _backend(actor):
    from serve._private.mcp.serving import McpBackend

    backend = McpBackend(McpServiceConfig(auth={"enabled": False}), "unit")
    backend._actor = lambda name: actor
    return backend


def test_search_facts_when_the_registry_fails_is_a_tool_error():
    def fail():
        raise ConnectionError("the registry is gone")

    out = asyncio.run(_backend(_Actor(system_config=fail))._search_facts({"query": "x"}, None))
    assert out["isError"] is True and "the registry is gone" in out["content"][0]["text"]


def test_recall_memory_with_a_malformed_hit_is_a_tool_error():
    memory = _Actor(search=lambda query, k: [{"score": 1.0}])  # no "record"
    out = asyncio.run(_backend(memory)._recall_memory({"query": "x"}, None))
    assert out["isError"] is True and "malformed" in out["content"][0]["text"]
