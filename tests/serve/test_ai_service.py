"""The AI service over real HTTP with the official openai client: a tiny random-weight model
loaded through the real transformers engine and the real Serve application."""

import asyncio
import os
import socketserver
import threading
import time
import uuid

import httpx
import numpy as np
import openai
import pytest
import ray

from models import EngineConfig, SamplingParams
from models._private.core import names
from models._private.engines.transformers_engine import TransformersEngine
from serve import AIServiceConfig, deploy
from tests.conftest import free_port

APP = "ai-test"
MAX_LEN = 128


class _HalfStream(socketserver.BaseRequestHandler):
    """A provider whose streams break after their first chunk: it sends one SSE event and
    drops the connection in the middle of the chunked body."""

    def handle(self):
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.request.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(
            next(
                v
                for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                if k.lower() == b"content-length"
            )
        )
        while len(body) < length:
            body += self.request.recv(65536)
        event = b'data: {"choices":[{"index":0,"delta":{"content":"half"},"finish_reason":null}]}\n\n'
        self.request.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            + f"{len(event):x}\r\n".encode()
            + event
            + b"\r\n"
        )


@pytest.fixture(scope="module")
def half_stream_url():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _HalfStream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def service(serve_port, tiny_model, half_stream_url):
    url = f"http://127.0.0.1:{serve_port}/v1"
    config = AIServiceConfig(
        auth={"enabled": False},  # tests/serve/test_auth.py covers keys
        port=serve_port,
        models={
            "tiny": {
                "source": tiny_model,
                "aliases": ["gpt-tiny"],
                "fallbacks": ["tiny-b"],
                "timeout_s": 5,
                "engine": {"max_model_len": MAX_LEN},
                "health_check_period_s": 2,
            },
            "tiny-b": {"source": tiny_model, "engine": {"max_model_len": MAX_LEN}},
            # Its engine runs inside the gateway replica: no deployment of its own.
            "tiny-c": {"source": tiny_model, "colocate": True, "engine": {"max_model_len": MAX_LEN}},
        },
        providers={
            # This same service reached over HTTP, as a remote provider (federation).
            "remote-self": {"base_url": url, "model": "tiny-b"},
            # Nothing listens here: every call fails at once.
            "remote-down": {
                "base_url": f"http://127.0.0.1:{free_port()}/v1",
                "model": "x",
                "fallbacks": ["tiny-b"],
            },
            "remote-dead": {"base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "x"},
            "remote-half": {"base_url": half_stream_url, "model": "x"},
        },
        # One failure opens a breaker, so that a killed replica's short absence shows.
        breaker={"failure_threshold": 1, "cooldown_s": 3},
    )
    assert deploy(config, app_name=APP) == url
    yield url
    from ray import serve

    serve.delete(APP)


@pytest.fixture(scope="module")
def client(service):
    return openai.OpenAI(base_url=service, api_key="test-key", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def local_engine(tiny_model):
    """The same model in this process, to check what the service returns."""
    return TransformersEngine(tiny_model, EngineConfig(max_model_len=MAX_LEN))


def backend_of(url: str, model: str, **body) -> str:
    r = httpx.post(
        f"{url}/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2,
            **body,
        },
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return r.headers["x-swarmray-backend"]


def test_models_are_listed_with_aliases_and_the_embedder(client):
    ids = {m.id for m in client.models.list().data}
    assert ids == {
        "tiny",
        "gpt-tiny",
        "tiny-b",
        "tiny-c",
        "remote-self",
        "remote-down",
        "remote-dead",
        "remote-half",
        "all-MiniLM-L6-v2",
    }


def test_chat_streaming_and_not_agree_with_the_model_run_here(client, local_engine):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello swarm"}]
    reply = client.chat.completions.create(model="gpt-tiny", messages=messages, max_tokens=10, temperature=0)
    prompt = local_engine.chat_prompt(messages)
    expected = asyncio.run(
        local_engine.generate(prompt, SamplingParams(max_tokens=10, temperature=0), chat=True)
    )
    assert reply.model == "tiny"
    assert reply.choices[0].message.content == expected.text
    assert reply.choices[0].finish_reason == expected.finish_reason
    assert reply.usage.prompt_tokens == local_engine.count_tokens(prompt, chat=True)
    assert reply.usage.completion_tokens == expected.completion_tokens
    parts = [{"type": "text", "text": "hello "}, {"type": "text", "text": "swarm"}]
    as_parts = client.chat.completions.create(
        model="tiny",
        messages=[messages[0], {"role": "user", "content": parts}],
        max_tokens=10,
        temperature=0,
    )
    assert as_parts.choices[0].message.content == expected.text  # text parts are joined
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=messages,
            max_tokens=10,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
    assert chunks[-1].usage.completion_tokens == expected.completion_tokens


def test_a_colocated_model_answers_from_inside_the_gateway_as_a_deployed_one_does(
    service, client, local_engine
):
    from ray import serve

    deployments = serve.status().applications[APP].deployments
    assert not any("tiny_c" in name for name in deployments)  # no deployment of its own
    messages = [{"role": "user", "content": "hello swarm"}]
    expected = asyncio.run(
        local_engine.generate(
            local_engine.chat_prompt(messages), SamplingParams(max_tokens=10, temperature=0), chat=True
        )
    )
    reply = client.chat.completions.create(model="tiny-c", messages=messages, max_tokens=10, temperature=0)
    assert reply.choices[0].message.content == expected.text
    stream = client.chat.completions.create(
        model="tiny-c", messages=messages, max_tokens=10, temperature=0, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected.text
    backends = httpx.get(f"{service}/backends", timeout=30).json()
    assert backends["tiny-c"]["kind"] == "model"


def test_served_engines_compute_with_the_nodes_cores(service, client):
    from ray import serve

    # Ray caps a replica of num_cpus 1 at one torch thread unless the engine says otherwise.
    client.chat.completions.create(model="tiny-c", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    counters = serve.get_app_handle(APP).engine_counters.remote().result(timeout_s=30)
    deployed = (
        serve.get_deployment_handle(names.deployment_name("tiny"), APP).counters.remote().result(timeout_s=30)
    )
    assert counters["tiny-c"]["torch_threads"] == os.cpu_count()
    assert deployed["torch_threads"] == os.cpu_count()
    # The gateway reads a model deployment's counters too (the fleet benchmark's `--no-colocate`).
    assert counters["tiny"]["torch_threads"] == os.cpu_count() and counters["tiny"]["requests"] >= 1


def test_a_model_deployment_keeps_its_batch_full_under_more_callers_than_it_holds(service):
    from ray import serve

    # More calls at once than a replica's former max_ongoing_requests (64): the rest waited in
    # Serve's router, which backs off while the replica is full, so the engine decoded passes of
    # about 5 rows out of 32 and sat idle between them (a fleet of 300 agents: a fifth of the
    # colocated model's throughput). The replica now takes them all; its engine queues them.
    handle = serve.get_deployment_handle(names.deployment_name("tiny-b"), APP)
    before = handle.counters.remote().result(timeout_s=30)

    async def calls(n: int) -> None:
        async with openai.AsyncOpenAI(base_url=service, api_key="k", max_retries=0, timeout=120) as c:
            await asyncio.gather(
                *(
                    c.chat.completions.create(
                        model="tiny-b", messages=[{"role": "user", "content": f"q{i}"}], max_tokens=16
                    )
                    for i in range(n)
                )
            )

    asyncio.run(calls(300))
    after = handle.counters.remote().result(timeout_s=30)
    rows = (after["row_steps"] - before["row_steps"]) / (after["steps"] - before["steps"])
    assert after["requests"] - before["requests"] == 300
    assert rows >= 16, f"decode passes of {rows:.1f} rows on average (max_batch_size 32)"


def test_a_chat_without_max_tokens_gets_what_fits_the_context(client, local_engine):
    # A fixed default of 256 on a 128-token model refused every such request.
    messages = [{"role": "user", "content": "count to three"}]
    reply = client.chat.completions.create(model="tiny-b", messages=messages, temperature=0)
    room = MAX_LEN - local_engine.count_tokens(local_engine.chat_prompt(messages), chat=True)
    assert 1 <= reply.usage.completion_tokens <= room
    assert reply.choices[0].finish_reason == "stop" or reply.usage.completion_tokens == room


def test_completions_match_the_model_run_here(client, local_engine):
    out = client.completions.create(model="tiny", prompt="the quick brown fox", max_tokens=8, temperature=0)
    expected = asyncio.run(
        local_engine.generate("the quick brown fox", SamplingParams(max_tokens=8, temperature=0))
    )
    assert out.choices[0].text == expected.text
    assert out.usage.prompt_tokens == expected.prompt_tokens
    streamed = client.completions.create(
        model="tiny", prompt="the quick brown fox", max_tokens=8, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == expected.text


def test_an_embedding_input_longer_than_the_embedder_reads_is_refused_not_cut(service):
    long = "swarms of agents share the work of a cluster " * 40  # about 360 tokens; MiniLM reads 256
    before = httpx.get(f"{service}/usage", timeout=30).json()
    r = httpx.post(
        f"{service}/embeddings",
        json={"model": "all-MiniLM-L6-v2", "input": ["short", long], "user": "long-input"},
        timeout=60,
    )
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "input.1" and error["code"] == "context_length_exceeded"
    assert "reads at most 256 tokens" in error["message"]
    after = httpx.get(f"{service}/usage", timeout=30).json()
    assert after == before  # nothing embedded, nothing counted


def test_embeddings_are_the_memory_embedder(client):
    from models import Embedder

    texts = ["hybrid search fuses ranks", "a queen dispatches tasks"]
    out = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
    got = np.array([d.embedding for d in out.data], dtype=np.float32)
    assert got.shape == (2, 384)
    np.testing.assert_allclose(got, Embedder().encode(texts), atol=1e-5)
    assert out.usage.prompt_tokens > 0


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "code"),
    [
        (
            "chat/completions",
            {"model": "gpt-5", "messages": [{"role": "user", "content": "x"}]},
            404,
            "model",
            "model_not_found",
        ),
        ("chat/completions", {"model": "tiny", "messages": []}, 400, "messages", "invalid_value"),
        (
            "chat/completions",
            {"model": "tiny", "messages": [{"role": "robot", "content": "x"}]},
            400,
            "messages.0.role",
            "invalid_value",
        ),
        (
            "chat/completions",
            {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": 7},
            400,
            "temperature",
            "invalid_value",
        ),
        ("chat/completions", {"messages": [{"role": "user", "content": "x"}]}, 400, "model", "invalid_value"),
        (
            "chat/completions",
            {"model": "tiny", "messages": [{"role": "user", "content": "word " * 200}]},
            400,
            "messages",
            "context_length_exceeded",
        ),
        (
            "completions",
            {"model": "tiny", "prompt": "x", "max_tokens": MAX_LEN},
            400,
            "prompt",
            "context_length_exceeded",
        ),
        ("completions", {"model": "tiny", "prompt": "x", "n": 3}, 400, "n", "invalid_value"),
        ("embeddings", {"model": "tiny", "input": "x"}, 404, "model", "model_not_found"),
        (
            "embeddings",
            {"model": "all-MiniLM-L6-v2", "input": ["ok", " "]},
            400,
            "input.1",
            "invalid_request",
        ),
        # Input limits, before anything is tokenized.
        ("completions", {"model": "tiny", "prompt": "x", "stop": ["a"] * 5}, 400, "stop", "invalid_value"),
        ("completions", {"model": "tiny", "prompt": "x", "user": "u" * 257}, 400, "user", "invalid_value"),
        # Found by fuzzing: a seed beyond 64 bits reached torch and failed there, as a 503.
        ("completions", {"model": "tiny", "prompt": "x", "seed": -(2**95)}, 400, "seed", "invalid_value"),
        ("completions", {"model": "tiny", "prompt": "x" * 1_000_001}, 400, "prompt", "invalid_value"),
        (
            "chat/completions",
            {"model": "tiny", "messages": [{"role": "user", "content": "x"}] * 1001},
            400,
            "messages",
            "invalid_value",
        ),
        ("embeddings", {"model": "all-MiniLM-L6-v2", "input": ["x"] * 2049}, 400, "input", "invalid_value"),
    ],
)
def test_bad_requests_get_openai_shaped_errors(service, path, body, status, param, code):
    r = httpx.post(f"{service}/{path}", json=body, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["code"] == code and error["message"], error


def test_a_body_over_the_size_limit_is_a_413_before_it_is_read(service):
    from serve._private.auth.middleware import MAX_BODY_BYTES

    r = httpx.post(
        f"{service}/completions",
        content=b" " * (MAX_BODY_BYTES + 1),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_bad_json_and_the_openai_client_error_types(service, client):
    r = httpx.post(
        f"{service}/chat/completions",
        content=b"{not json",
        timeout=30,
        headers={"content-type": "application/json"},
    )
    error = r.json()["error"]
    assert r.status_code == 400 and error["type"] == "invalid_request_error"
    assert error["param"] == "body" and error["code"] == "invalid_json"  # not a character offset
    assert error["message"].startswith("the request body is not valid JSON: Expecting property name")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt="word " * 200)


def test_usage_is_summed_per_caller_and_model(service, client):
    user = f"alice-{uuid.uuid4().hex[:8]}"  # the ledger outlives the service: a caller of this run
    for _ in range(2):
        out = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "count me"}], max_tokens=3, user=user
        )
    usage = httpx.get(f"{service}/usage").json()["callers"][user]["tiny"]
    assert usage["requests"] == 2
    assert usage["prompt_tokens"] == 2 * out.usage.prompt_tokens
    assert 2 <= usage["completion_tokens"] <= 6


def test_a_remote_openai_compatible_provider_serves(service, client):
    assert backend_of(service, "remote-self", temperature=0) == "remote-self"
    via_remote = client.completions.create(model="remote-self", prompt="hello", max_tokens=6, temperature=0)
    direct = client.completions.create(model="tiny-b", prompt="hello", max_tokens=6, temperature=0)
    assert via_remote.choices[0].text == direct.choices[0].text
    assert via_remote.usage.completion_tokens == direct.usage.completion_tokens
    streamed = client.completions.create(
        model="remote-self",
        prompt="hello",
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == direct.choices[0].text
    assert chunks[-1].usage.completion_tokens == direct.usage.completion_tokens  # relayed from the provider


def test_a_broken_provider_falls_back_and_its_breaker_opens(service, client):
    served = {backend_of(service, "remote-down") for _ in range(3)}
    assert served == {"tiny-b"}
    stream = client.chat.completions.create(
        model="remote-down", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
    )
    assert [c for c in stream]
    state = httpx.get(f"{service}/backends").json()["remote-down"]
    # Open, or half-open if the 3 s cool-down passed on a slow machine; never closed again.
    assert state["breaker"] in ("open", "half_open") and state["failures"] >= 1


def test_a_stream_that_breaks_after_its_first_chunk_counts_against_the_backend(service, client):
    stream = client.chat.completions.create(
        model="remote-half", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
    )
    chunks = []
    with pytest.raises(openai.APIError, match="remote-half") as broke:
        for chunk in stream:  # the first chunk arrives; then the error comes in-band
            chunks.append(chunk.choices[0].delta.content)
    assert chunks == ["half"]
    assert "Error" not in str(broke.value) and broke.value.body["request_id"]  # no repr leaks
    state = httpx.get(f"{service}/backends").json()["remote-half"]
    assert state["failures"] == 1 and state["breaker"] in ("open", "half_open")


def test_a_model_with_every_backend_down_gets_a_503_not_a_hang(service):
    for _ in range(2):  # the first fails at the provider, the second finds its breaker open
        r = httpx.post(
            f"{service}/chat/completions",
            json={"model": "remote-dead", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "backends_unavailable" and error["param"] == "model"
        assert "remote-dead" in error["message"]
        # The backends' own errors (here a refused connection) stay in the service log, found
        # there by the request id the body and the header both carry.
        assert error["request_id"] == r.headers["x-request-id"]
        assert "connect" not in r.text.lower() and "Error" not in error["message"]


def test_killed_primary_fails_over_then_its_breaker_half_opens_and_closes(service):
    assert backend_of(service, "gpt-tiny") == "tiny"
    replicas = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve"
        and a["name"].split("#")[1:2] == ["model-tiny"]
        and a["name"].startswith(f"SERVE_REPLICA::{APP}#")
    ]
    assert len(replicas) == 1, replicas
    ray.kill(ray.get_actor(replicas[0], namespace="serve"), no_restart=True)

    seen, states = [], set()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        seen.append(backend_of(service, "gpt-tiny"))
        states.add(httpx.get(f"{service}/backends").json()["tiny"]["breaker"])
        if "tiny-b" in seen and seen[-1] == "tiny":
            break
        time.sleep(0.5)
    assert "tiny-b" in seen, "requests failed over while the primary was dead"
    assert "open" in states, "the primary's breaker opened"
    assert seen[-1] == "tiny", f"the primary came back and took requests again: {seen[-10:]}"
    assert httpx.get(f"{service}/backends").json()["tiny"]["breaker"] == "closed"
