"""Tools and structured output over real HTTP with the official openai client: tool calls from
a remote provider (tests/scripted_provider.py) carried back in OpenAI's shape, whole and
streamed; calls the service itself reads out of a model's text; the 400 every bad tool, tool
choice, format or tool result gets; and constrained output from the tiny random-weight model
through the transformers engine."""

import json
import uuid
from typing import Literal

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from serve import AIServiceConfig, deploy
from serve._private.ai.config import DEFAULT_MODEL, DEFAULT_MODEL_SOURCE
from tests.scripted_provider import ScriptedProvider, tool_call

APP = "ai-tools-test"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["unit"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Oslo?"}]


class Unit(BaseModel):
    unit: Literal["c", "f"]


class Capital(BaseModel):
    city: str = Field(max_length=40)
    country: str = Field(max_length=40)


@pytest.fixture(scope="module")
def provider():
    scripted = ScriptedProvider()
    scripted.streams = True
    yield scripted
    scripted.close()


@pytest.fixture(scope="module")
def long_tiny_model(tmp_path_factory):
    """The tests' tiny model with room for the tools' system message (about 450 tokens)."""
    from models import build_tiny_model

    return build_tiny_model(str(tmp_path_factory.mktemp("tiny-tools")), max_positions=2048)


@pytest.fixture(scope="module")
def service(serve_port, long_tiny_model, provider):
    config = AIServiceConfig(
        auth={"enabled": False},  # tests/serve/test_auth.py has the audit of tool calls
        port=serve_port,
        route_prefix="/ai-tools",
        models={
            "tiny": {"source": long_tiny_model, "colocate": True, "engine": {"max_model_len": 2048}},
            DEFAULT_MODEL: {"source": DEFAULT_MODEL_SOURCE},  # SmolLM2-135M-Instruct
        },
        providers={"scripted": {"base_url": provider.url, "model": "m"}},
    )
    url = deploy(config, app_name=APP)
    yield url
    from ray import serve

    serve.delete(APP)


@pytest.fixture(scope="module")
def client(service):
    return openai.OpenAI(base_url=service, api_key="test-key", max_retries=0, timeout=120)


def test_a_providers_tool_calls_come_back_as_openai_shapes_and_the_fields_reach_it(client, provider):
    provider.respond = lambda body: {"content": None, "tool_calls": [tool_call("get_weather", {"unit": "c"})]}
    reply = client.chat.completions.create(
        model="scripted", messages=ASK, tools=[WEATHER], tool_choice="auto", parallel_tool_calls=False
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert (call.id, call.type, call.function.name) == ("call_scripted", "function", "get_weather")
    assert json.loads(call.function.arguments) == {"unit": "c"}
    sent = provider.requests[-1]
    assert (
        sent["tools"] == [WEATHER] and sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is False
    )
    assert "json_schema" not in sent  # what our engines are constrained to is ours


def test_a_loop_sends_the_calls_and_results_back_and_the_provider_answers(client, provider):
    provider.respond = lambda body: (
        "It is sunny."
        if body["messages"][-1]["role"] == "tool"
        else {
            "content": None,
            "tool_calls": [tool_call("get_weather", {"unit": "c"})],
        }
    )
    messages = list(ASK)
    first = client.chat.completions.create(model="scripted", messages=messages, tools=[WEATHER])
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    call = first.choices[0].message.tool_calls[0]
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 20 C"})
    final = client.chat.completions.create(model="scripted", messages=messages, tools=[WEATHER])
    assert final.choices[0].message.content == "It is sunny." and final.choices[0].finish_reason == "stop"
    sent = provider.requests[-1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_scripted" and sent[1]["content"] is None
    assert sent[2] == {"role": "tool", "content": "sunny, 20 C", "tool_call_id": "call_scripted"}


def test_a_providers_streamed_tool_calls_are_relayed_and_the_client_assembles_them(client, provider):
    calls = [
        tool_call("get_weather", {"unit": "c"}, "call_a"),
        tool_call("get_weather", {"unit": "f"}, "call_b"),
    ]
    provider.respond = lambda body: {"content": None, "tool_calls": calls}
    with client.chat.completions.stream(model="scripted", messages=ASK, tools=[WEATHER]) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("call_a", "get_weather", {"unit": "c"}),
        ("call_b", "get_weather", {"unit": "f"}),
    ]


def test_parse_with_a_pydantic_model_through_a_provider(client, provider):
    provider.respond = lambda body: '{"unit": "f"}'
    parsed = client.chat.completions.parse(model="scripted", messages=ASK, response_format=Unit)
    assert parsed.choices[0].message.parsed == Unit(unit="f")
    form = provider.requests[-1]["response_format"]
    assert form["type"] == "json_schema" and form["json_schema"]["name"] == "Unit"
    assert form["json_schema"]["strict"] is True and form["json_schema"]["schema"]["required"] == ["unit"]


def test_a_malformed_tool_call_from_a_provider_comes_back_as_content(client, provider):
    text = '<tool_call>{"name": "get_weather", "arguments": {"unit": </tool_call>'
    provider.respond = lambda body: text
    reply = client.chat.completions.create(model="scripted", messages=ASK, tools=[WEATHER])
    assert reply.choices[0].message.content == text and not reply.choices[0].message.tool_calls
    streamed = client.chat.completions.create(model="scripted", messages=ASK, tools=[WEATHER], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text


def test_a_loop_of_three_calls_is_counted_three_times(service, client, provider):
    user = f"looper-{uuid.uuid4().hex[:8]}"
    provider.respond = lambda body: {"content": None, "tool_calls": [tool_call("get_weather", {"unit": "c"})]}
    messages = list(ASK)
    for _ in range(3):
        reply = client.chat.completions.create(
            model="scripted", messages=messages, tools=[WEATHER], user=user
        )
        call = reply.choices[0].message.tool_calls[0]
        messages += [
            reply.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ]
    usage = httpx.get(f"{service}/usage", timeout=30).json()["callers"][user]["scripted"]
    assert usage["requests"] == 3 and usage["prompt_tokens"] == 300 and usage["completion_tokens"] == 150


def test_the_local_model_is_offered_tools_and_its_text_is_content_unless_it_is_a_call(client):
    # A random-weight model writes no <tool_call>: its text is the content, never a 500.
    messages = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [tool_call("get_weather", {"unit": "c"})]},
        {"role": "tool", "tool_call_id": "call_scripted", "content": "sunny"},
    ]
    reply = client.chat.completions.create(
        model="tiny", messages=messages, tools=[WEATHER], max_tokens=8, temperature=0
    )
    choice = reply.choices[0]
    assert choice.finish_reason in ("stop", "length") and not choice.message.tool_calls
    assert reply.usage.prompt_tokens > 100  # the tools' system message was rendered
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=messages, tools=[WEATHER], max_tokens=8, temperature=0, stream=True
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == choice.message.content
    assert chunks[-1].choices[0].finish_reason == choice.finish_reason


BAD_SCHEMA = {"type": "object", "properties": {"unit": {"type": "colour"}}}


def body(**fields):
    return {"model": "tiny", "messages": ASK, "max_tokens": 4, **fields}


def named(name):
    return {"type": "function", "function": {"name": name}}


def with_parameters(parameters, name="get_weather"):
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [with_parameters(BAD_SCHEMA)]}, "tools.0.function.parameters"),
        ({"tools": [WEATHER, WEATHER]}, "tools.1.function.name"),
        ({"tools": [WEATHER], "tool_choice": named("get_time")}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": named("get_weather")}, "tool_choice"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": BAD_SCHEMA}}},
            "response_format.json_schema.schema",
        ),
        (
            {"messages": [*ASK, {"role": "tool", "tool_call_id": "call_nobody", "content": "sunny"}]},
            "messages.1.tool_call_id",
        ),
        ({"tools": [with_parameters({}, "no spaces allowed")]}, "tools.0.function.name"),
    ],
)
def test_bad_tools_formats_and_results_are_400s_naming_the_field(service, client, fields, param):
    r = httpx.post(f"{service}/chat/completions", json=body(**fields), timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"], error
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(**body(**fields))


# What follows needs constrained decoding (the engine branch's llguidance in the transformers
# engine): the random-weight model writes valid calls and JSON only under a grammar.


def test_a_required_tool_call_from_the_local_model_is_valid(client):
    reply = client.chat.completions.create(
        model="tiny", messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=64, temperature=0
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls and all(
        c.function.name == "get_weather" for c in choice.message.tool_calls
    )
    for call in choice.message.tool_calls:
        assert json.loads(call.function.arguments)["unit"] in ("c", "f") and call.id.startswith("call_")


def test_a_named_tool_call_streams_as_openai_deltas_the_client_assembles(client):
    forced = named("get_weather")
    with client.chat.completions.stream(
        model="tiny", messages=ASK, tools=[WEATHER], tool_choice=forced, max_tokens=64, temperature=0
    ) as stream:
        final = stream.get_final_completion()
    (call,) = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert Unit.model_validate_json(call.function.arguments)


def test_parse_and_json_object_from_the_local_model(client):
    parsed = client.chat.completions.parse(
        model="tiny", messages=ASK, response_format=Unit, max_tokens=64, temperature=0
    )
    assert isinstance(parsed.choices[0].message.parsed, Unit)
    reply = client.chat.completions.create(
        model="tiny", messages=ASK, response_format={"type": "json_object"}, max_tokens=64, temperature=0
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "length" or isinstance(json.loads(choice.message.content), dict)


def test_the_default_model_answers_a_pydantic_format_and_a_required_call_validly(client):
    # SmolLM2-135M-Instruct, greedy, under the grammar of each schema.
    question = [{"role": "user", "content": "What is the capital of France?"}]
    parsed = client.chat.completions.parse(
        model=DEFAULT_MODEL, messages=question, response_format=Capital, max_tokens=64, temperature=0
    )
    assert isinstance(parsed.choices[0].message.parsed, Capital)
    city = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 40}, "unit": {"enum": ["c", "f"]}},
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    }
    reply = client.chat.completions.create(
        model=DEFAULT_MODEL, messages=ASK, tools=[city], tool_choice="required", max_tokens=96, temperature=0
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    for call in choice.message.tool_calls:
        arguments = json.loads(call.function.arguments)
        assert call.function.name == "get_weather" and set(arguments) == {"city", "unit"}
        assert arguments["unit"] in ("c", "f") and len(arguments["city"]) <= 40
