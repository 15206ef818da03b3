"""Chat bodies with tools, tool choices and response formats (serve/_private/ai/protocol.py):
what they constrain the completion to, and the 400 each bad one gets, naming its field. The
schemas are checked by the real `grammar.check_schema`."""

import pytest
from pydantic import ValidationError

from models._private.core.errors import RequestError
from models._private.engines.tool_calls import named_tool_schema, required_tool_schema
from serve._private.ai.protocol import MAX_TOOLS, ChatBody

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def tool(name, parameters=CITY):
    return {"type": "function", "function": {"name": name, "description": "d", "parameters": parameters}}


def chat(**fields):
    return ChatBody.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields})


TOOLS = [tool("get_weather"), tool("text_stats", None)]


def test_each_tool_choice_maps_to_its_schema_and_whether_tools_are_rendered():
    assert chat().tool_mode() == "none" and chat().checked_json_schema() is None
    auto = chat(tools=TOOLS)
    assert auto.tool_mode() == "auto" and auto.checked_json_schema() is None
    assert chat(tools=TOOLS, tool_choice="none").tool_mode() == "none"
    dumped = chat(tools=TOOLS).tools_dumped()
    assert chat(tools=TOOLS, tool_choice="required").checked_json_schema() == required_tool_schema(
        dumped, True
    )
    one = chat(tools=TOOLS, tool_choice="required", parallel_tool_calls=False).checked_json_schema()
    assert one["maxItems"] == 1
    named = chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert named.tool_mode() == "named" and named.checked_json_schema() == named_tool_schema(
        dumped, "get_weather"
    )


def test_response_formats_constrain_strict_or_not():
    assert chat(response_format={"type": "text"}).checked_json_schema() is None
    assert chat(response_format={"type": "json_object"}).checked_json_schema() == {"type": "object"}
    for strict in (True, False, None):
        spec = {"name": "City", "schema": CITY, **({} if strict is None else {"strict": strict})}
        assert (
            chat(response_format={"type": "json_schema", "json_schema": spec}).checked_json_schema() == CITY
        )


def test_the_client_fields_go_to_a_provider_as_sent():
    body = chat(tools=[tool("f")], tool_choice="required", response_format={"type": "json_object"})
    fields = body.openai_fields()
    assert fields["tools"] == [tool("f")] and fields["tool_choice"] == "required"
    assert fields["response_format"] == {"type": "json_object"} and "parallel_tool_calls" not in fields
    spec = {"name": "City", "schema": CITY, "strict": True}
    assert chat(response_format={"type": "json_schema", "json_schema": spec}).openai_fields() == {
        "response_format": {"type": "json_schema", "json_schema": spec}
    }
    assert chat().openai_fields() == {}


CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [tool("f", {"type": "objekt"})]}, "tools.0.function.parameters"),
        ({"tools": [tool("f"), tool("g", {"required": "city"})]}, "tools.1.function.parameters"),
        ({"tools": [tool("f"), tool("g"), tool("f")]}, "tools.2.function.name"),
        (
            {"tools": [tool("f")], "tool_choice": {"type": "function", "function": {"name": "g"}}},
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}},
            "response_format.json_schema.schema",
        ),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "tool_calls": [CALL]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
                    {"role": "tool", "tool_call_id": "call_2", "content": "?"},
                ]
            },
            "messages.3.tool_call_id",
        ),
        (
            {
                "messages": [
                    {"role": "tool", "tool_call_id": "call_1", "content": "?"},
                    {"role": "assistant", "tool_calls": [CALL]},
                ]
            },
            "messages.0.tool_call_id",
        ),
    ],
)
def test_bad_tools_and_formats_are_refused_naming_the_field(fields, param):
    with pytest.raises(RequestError) as refused:
        chat(**fields).checked_json_schema()
    assert refused.value.param == param and refused.value.reason


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"tools": [tool("has space")]}, ("tools", 0, "function", "name")),
        ({"tools": [tool("x" * 65)]}, ("tools", 0, "function", "name")),
        ({"tools": [tool(f"f{i}") for i in range(MAX_TOOLS + 1)]}, ("tools",)),
        ({"tools": [tool("f", {"type": "object", "description": "x" * 1_000_001})]}, ("tools",)),
        ({"tool_choice": "sometimes"}, ("tool_choice",)),
        ({"response_format": {"type": "yaml"}}, ("response_format", "type")),
        ({"messages": [{"role": "user"}]}, ("messages", 0)),  # no content
        ({"messages": [{"role": "user", "content": "x", "tool_calls": [CALL]}]}, ("messages", 0)),
        ({"messages": [{"role": "tool", "content": "x"}]}, ("messages", 0)),  # no tool_call_id
    ],
)
def test_malformed_fields_fail_validation_at_their_place(fields, loc):
    with pytest.raises(ValidationError) as refused:
        chat(**fields)
    assert refused.value.errors()[0]["loc"][: len(loc)] == loc


def test_an_assistant_message_with_tool_calls_may_have_no_content_and_keeps_its_calls():
    body = chat(
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
    )
    body.checked_json_schema()
    assert [m.openai() for m in body.messages] == [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
    ]


def test_the_payload_carries_the_constraint_and_the_tools_only_when_the_template_renders_them():
    required = chat(tools=TOOLS, tool_choice="required", max_completion_tokens=7).payload()
    assert required["messages"] == [{"role": "user", "content": "hi"}]
    assert required["params"]["max_tokens"] == 7
    assert required["params"]["json_schema"] == required_tool_schema(chat(tools=TOOLS).tools_dumped(), True)
    assert required["tools"] == chat(tools=TOOLS).tools_dumped()
    assert required["openai"] == {"tools": required["tools"], "tool_choice": "required"}
    none = chat(tools=TOOLS, tool_choice="none").payload()
    assert "tools" not in none and none["params"]["json_schema"] is None
    assert "openai" not in chat().payload()
