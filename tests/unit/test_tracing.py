"""Tracing in one process, no Ray: off is a shared no-op; on, spans nest through a task's
carrier and go to a JSON-lines file per process or to an OTLP/HTTP receiver; two real queens
(one delegating to the other, colocated agents) make one tree of a task's way."""

import asyncio
import json
import os
import stat
import threading
from contextlib import nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from actors import Task
from actors._private.services import AI_URL_KEY, ServiceClient
from cluster import load_config
from models._private.core import tracing
from models._private.core.tracing import TracingConfig
from serve._private.tracing import TraceMiddleware
from tests.scripted_provider import ScriptedProvider
from tests.unit.test_queen import delegating_pair, run


def spans_in(directory: Path) -> list[dict]:
    """Every span the processes wrote in `directory`, as the file exporter wrote it."""
    return [
        json.loads(line)
        for path in sorted(directory.glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def tree(spans: list[dict]) -> set[tuple[str, str | None]]:
    """The (span name, parent's name) edges of `spans`; a root's parent is None."""
    names = {s["context"]["span_id"]: s["name"] for s in spans}
    return {(s["name"], names.get(s["parent_id"]) if s["parent_id"] else None) for s in spans}


@pytest.fixture
def traced(tmp_path):
    """Tracing on in this process, to files in a directory of the test's; off again after."""
    directory = tmp_path / "traces"
    assert tracing.configure(TracingConfig(enabled=True, directory=str(directory)), "test", "ns")
    yield directory
    tracing.shutdown()


def test_off_a_span_is_the_shared_no_op_and_nothing_is_carried():
    assert not tracing.enabled()
    assert tracing.span("x") is tracing.span("y", {"traceparent": "00-1-2-01"}, "server")
    assert isinstance(tracing.span("x"), nullcontext)
    with tracing.span("x") as span:
        assert span is None and tracing.carrier() is None and dict(tracing.headers()) == {}
    tracing.mark("x", {}, 1)  # nothing to end
    assert Task(capability="a.b").trace is None


def test_a_disabled_config_or_otel_sdk_disabled_leaves_tracing_off(tmp_path, monkeypatch):
    assert not tracing.configure(None, "test", "ns")
    assert not tracing.configure(TracingConfig(directory=str(tmp_path)), "test", "ns")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing.configure(TracingConfig(enabled=True, directory=str(tmp_path)), "test", "ns")
    assert not tracing.enabled() and not list(tmp_path.iterdir())


def test_nested_spans_and_a_carried_context_make_one_trace_in_the_processs_private_file(traced):
    with tracing.span("outer", {}, "producer", attributes={"swarmray.task_id": "s:1"}):
        carried = tracing.carrier()
        with tracing.span("inner"):
            pass
    assert set(carried) == {"traceparent"}
    # Elsewhere (another process, or a queen serving many tasks): under the carrier, not the
    # current span.
    with tracing.span("unrelated", {}), tracing.span("handled", carried, "consumer"):
        tracing.mark("waited", carried, 1_000_000_000)
    (path,) = traced.glob("*.jsonl")
    assert path.name.endswith(f"-{os.getpid()}.jsonl")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(traced.stat().st_mode) == 0o700
    spans = spans_in(traced)
    assert tree(spans) == {
        ("outer", None),
        ("inner", "outer"),
        ("unrelated", None),
        ("handled", "outer"),
        ("waited", "outer"),
    }
    by_name = {s["name"]: s for s in spans}
    assert len({by_name[n]["context"]["trace_id"] for n in ("outer", "inner", "handled", "waited")}) == 1
    assert by_name["unrelated"]["context"]["trace_id"] != by_name["outer"]["context"]["trace_id"]
    assert by_name["outer"]["kind"] == "SpanKind.PRODUCER" and by_name["outer"]["attributes"] == {
        "swarmray.task_id": "s:1"
    }
    assert by_name["waited"]["start_time"].startswith("1970-01-01T00:00:01")
    assert by_name["handled"]["resource"]["attributes"]["process.pid"] == os.getpid()


def test_an_error_inside_a_span_is_recorded_on_it(traced):
    with pytest.raises(ValueError), tracing.span("failing"):
        raise ValueError("bad input")
    (span,) = spans_in(traced)
    assert span["status"]["status_code"] == "ERROR"
    assert span["events"][0]["attributes"]["exception.type"] == "ValueError"


def test_configure_is_once_per_process(traced, tmp_path):
    other = tmp_path / "other"
    assert tracing.configure(TracingConfig(enabled=True, directory=str(other)), "second", "ns")
    with tracing.span("x"):
        pass
    assert not other.exists() and spans_in(traced)[0]["resource"]["attributes"]["service.name"] == "test"


def test_up_resolves_the_endpoint_from_its_own_environment_when_the_config_names_none():
    on = TracingConfig(enabled=True)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert on.resolved(env).endpoint == "http://collector:4318"
    assert on.model_copy(update={"endpoint": "http://mine:4318"}).resolved(env).endpoint == "http://mine:4318"
    assert TracingConfig().resolved(env).endpoint is None  # off: nothing to send anywhere
    assert on.resolved({}).endpoint is None


def test_the_services_trace_as_the_system_does_unless_they_say_otherwise():
    system = {"swarms": {"s": {"pools": {"p": {"agent": {"class": "actors:TextStatsAgent"}}}}}}
    on = {"enabled": True, "sample_ratio": 0.5}
    config = load_config({**system, "tracing": on, "ai": {}, "facts": {"tracing": {"enabled": False}}})
    assert config.tracing == config.ai.tracing == TracingConfig(**on)
    assert not config.facts.tracing.enabled
    assert not load_config({**system, "ai": {}}).ai.tracing.enabled
    # The /mcp endpoint too, on by default under `mcp:` as it is.
    assert load_config({**system, "tracing": on, "mcp": {}}).mcp.server.tracing == TracingConfig(**on)
    off = {"server": {"tracing": {"enabled": False}}}
    assert not load_config({**system, "tracing": on, "mcp": off}).mcp.server.tracing.enabled
    assert load_config({**system, "tracing": on, "mcp": {"server": None}}).mcp.server is None


class TracedProvider(ScriptedProvider):
    """The scripted model, keeping each request's `traceparent` header too."""

    def __init__(self):
        self.traceparents: list[str | None] = []
        super().__init__()

    def _answer(self, handler):
        self.traceparents.append(handler.headers.get("traceparent"))
        super()._answer(handler)


class _NoKey:
    """The registry's KV store as an agent's context reaches it: no service key (auth off)."""

    async def kv_get(self, key):
        return None


class _Context:
    tasks = _NoKey()


def test_an_agents_service_call_is_a_client_span_whose_context_goes_as_traceparent(traced):
    provider = TracedProvider()
    provider.script = ["hello", "again"]
    client = ServiceClient(AI_URL_KEY, provider.url, timeout_s=30)
    ask = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

    async def calls():
        with tracing.span("agent.handle", {}):
            await client.post(_Context(), "chat/completions", ask)
        tracing.shutdown()  # off: the request goes as before, with no header
        await client.post(_Context(), "chat/completions", ask)

    try:
        asyncio.run(calls())
    finally:
        provider.close()
    spans = spans_in(traced)
    assert tree(spans) == {("agent.handle", None), ("http.client POST chat/completions", "agent.handle")}
    (call,) = [s for s in spans if s["kind"] == "SpanKind.CLIENT"]
    assert call["attributes"]["http.response.status_code"] == 200
    assert call["attributes"]["url.full"] == provider.url + "/chat/completions"
    sent, unsent = provider.traceparents
    assert sent.split("-")[1:3] == [call["context"]["trace_id"][2:], call["context"]["span_id"][2:]]
    assert unsent is None


def _echo_app(scope, receive, send):
    async def app():
        status = 404 if scope["path"] == "/missing" else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app()


def _get(path: str, headers=None) -> int:
    app = TraceMiddleware(_echo_app, service="ai")

    async def call():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            return (await client.get(path, headers=headers)).status_code

    return asyncio.run(call())


def test_a_services_request_is_a_server_span_under_the_callers_traceparent(traced):
    with tracing.span("http.client GET", {}):
        caller = dict(tracing.headers())
    assert _get("/v1/models", caller) == 200
    assert _get("/missing") == 404  # no traceparent: a trace of its own
    spans = spans_in(traced)
    assert tree(spans) == {
        ("http.client GET", None),
        ("http.server GET /v1/models", "http.client GET"),
        ("http.server GET /missing", None),
    }
    statuses = {
        s["name"]: s["attributes"]["http.response.status_code"]
        for s in spans
        if s["kind"] == "SpanKind.SERVER"
    }
    assert statuses == {"http.server GET /v1/models": 200, "http.server GET /missing": 404}


class _Remote:
    """An actor's method as the MCP backend calls it (`.remote(...)`, awaited)."""

    def __init__(self, f):
        self.f = f

    async def remote(self, *args):
        return self.f(*args)


def test_an_mcp_tool_call_is_a_span_under_the_requests_whose_context_its_task_carries(traced):
    from serve._private.mcp.config import McpServiceConfig
    from serve._private.mcp.serving import McpBackend
    from serve._private.mcp.tools import ToolEntry

    submitted: list[dict] = []
    done = SimpleNamespace(status="succeeded", output={"words": 3}, error_type=None, error=None)
    actor = SimpleNamespace(  # the registry and the queen in one
        route=_Remote(lambda capability, barred: "s"),
        submit=_Remote(lambda task: submitted.append(task) or "s:1"),
        result=_Remote(lambda task_id, timeout_s: done),
    )
    backend = McpBackend(McpServiceConfig(auth={"enabled": False}), "unit")
    backend._actor = lambda name: actor
    with tracing.span("http.server POST /mcp", {}, "server"):
        request = SimpleNamespace(scope={"state": {"trace": tracing.carrier()}})
    tool = ToolEntry(name="text.stats", description="", input_schema={"type": "object"}, swarms=["s"])
    # Outside the server span: the handler takes the request's context from its scope.
    out = asyncio.run(backend.call(SimpleNamespace(request=request), tool, {"text": "a b c"}, None))
    assert not out.get("isError"), out
    spans = spans_in(traced)
    assert tree(spans) == {("http.server POST /mcp", None), ("tool.call text.stats", "http.server POST /mcp")}
    (call,) = [s for s in spans if s["name"] == "tool.call text.stats"]
    assert call["attributes"]["swarmray.child_task_id"] == "s:1"
    (task,) = submitted
    assert task["trace"]["traceparent"].split("-")[2] == call["context"]["span_id"].removeprefix("0x")


def test_off_the_middleware_passes_requests_through_untouched(tmp_path):
    assert _get("/v1/models", {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}) == 200
    assert not tracing.enabled()


class _Receiver:
    """An OTLP/HTTP collector's traces route on 127.0.0.1: the requests it decoded."""

    def __init__(self):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.requests, self.paths, self.arrived = [], [], threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.paths.append((self.path, self.headers["Content-Type"]))
                receiver.requests.append(ExportTraceServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()
                receiver.arrived.set()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_with_an_endpoint_spans_go_over_otlp_http_and_no_file_is_written(tmp_path):
    receiver = _Receiver()
    try:
        config = TracingConfig(enabled=True, endpoint=receiver.url + "/", directory=str(tmp_path / "none"))
        assert tracing.configure(config, "swarmray.queen", "sys")
        with tracing.span("outer", {}), tracing.span("inner"):
            pass
        tracing.flush()
        assert receiver.arrived.wait(10)
    finally:
        tracing.shutdown()
        receiver.close()
    assert receiver.paths[0] == ("/v1/traces", "application/x-protobuf")
    (resource_spans,) = [r for req in receiver.requests for r in req.resource_spans]
    attributes = {a.key: a.value for a in resource_spans.resource.attributes}
    assert attributes["service.name"].string_value == "swarmray.queen"
    assert attributes["service.namespace"].string_value == "sys"
    spans = {s.name: s for scope in resource_spans.scope_spans for s in scope.spans}
    assert spans["inner"].parent_span_id == spans["outer"].span_id
    assert spans["inner"].trace_id == spans["outer"].trace_id
    assert not (tmp_path / "none").exists()


def test_a_delegated_task_is_one_tree_across_two_queens_and_the_agent(traced, tmp_path):
    front, back, _ = delegating_pair(tmp_path)

    async def scenario():
        await back.start()
        await front.start()
        with tracing.span("swarm.submit", kind="producer"):
            task = Task(capability="test.sleep", payload={"label": 1}, trace=tracing.carrier())
        return await front.run(task)

    result = run(scenario())
    assert result.ok and result.swarm == "back"
    spans = spans_in(traced)
    assert tree(spans) >= {
        ("swarm.submit", None),
        ("queen.accept", "swarm.submit"),  # front's
        ("queen.delegate", "queen.accept"),
        ("queen.accept", "queen.delegate"),  # back's
        ("task.queue_wait", "queen.accept"),
        ("task.attempt", "queen.accept"),
        ("agent.handle", "task.attempt"),
    }
    assert len({s["context"]["trace_id"] for s in spans}) == 1
    accepts = {s["attributes"]["swarmray.swarm"]: s for s in spans if s["name"] == "queen.accept"}
    assert set(accepts) == {"front", "back"}
    assert accepts["front"]["attributes"]["swarmray.task_id"] == result.task_id
    (attempt,) = [s for s in spans if s["name"] == "task.attempt"]
    assert attempt["attributes"]["swarmray.outcome"] == "succeeded"
    assert attempt["attributes"]["swarmray.task_id"] == accepts["back"]["attributes"]["swarmray.task_id"]
    assert attempt["parent_id"] == accepts["back"]["context"]["span_id"]
