"""Tool calls rendered for a chat template that cannot take tools, and parsed out of completions
(models/_private/engines/tool_calls.py), whole and streamed."""

import json

import pytest

from models._private.engines.tool_calls import (
    ToolCallStream,
    fallback_messages,
    forced_tool_calls,
    parse_tool_calls,
    plain_tool_messages,
    tool_prompt,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
NAMES = {"get_weather", "text_stats"}


def arguments(call):
    return json.loads(call["function"]["arguments"])


def test_the_fallback_prompt_lists_each_tool_and_asks_for_hermes_blocks():
    prompt = tool_prompt([WEATHER])
    listed = prompt.split("<tools>\n")[1].split("\n</tools>")[0]
    assert json.loads(listed) == {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": WEATHER["function"]["parameters"],
    }
    assert '<tool_call>\n{"name": "<function name>", "arguments": {<its arguments>}}\n</tool_call>' in prompt


def test_the_tools_join_the_callers_system_message_or_make_one():
    joined = fallback_messages(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}], [WEATHER]
    )
    assert [m["role"] for m in joined] == ["system", "user"]
    assert joined[0]["content"].startswith("Be brief.\n\n") and "get_weather" in joined[0]["content"]
    made = fallback_messages([{"role": "user", "content": "hi"}], [WEATHER])
    assert made[0] == {"role": "system", "content": tool_prompt([WEATHER])} and made[1]["content"] == "hi"
    assert fallback_messages([{"role": "user", "content": "hi"}], None) == [{"role": "user", "content": "hi"}]


def test_tool_calls_and_results_become_plain_messages():
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    plain = plain_tool_messages(
        [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]
    )
    assert plain == [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>',
        },
        {"role": "user", "content": "<tool_response>\nsunny\n</tool_response>"},
    ]
    # What the assistant wrote as a call parses back to the same call.
    content, calls = parse_tool_calls(plain[1]["content"], NAMES)
    assert content is None and arguments(calls[0]) == {"city": "Oslo"}


def test_blocks_become_calls_with_fresh_ids_and_the_rest_stays_content():
    text = (
        'Let me look.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>\n'
        '<tool_call>\n{"name": "text_stats", "parameters": {"text": "a b"}}\n</tool_call>'
    )
    content, calls = parse_tool_calls(text, NAMES)
    assert content == "Let me look."
    assert [c["function"]["name"] for c in calls] == ["get_weather", "text_stats"]
    assert [arguments(c) for c in calls] == [{"city": "Oslo"}, {"text": "a b"}]
    assert all(c["id"].startswith("call_") and len(c["id"]) == 29 and c["type"] == "function" for c in calls)
    assert calls[0]["id"] != calls[1]["id"]


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>',  # bad JSON
        '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',  # not an offered function
        '<tool_call>{"name": "get_weather", "arguments": [1]}</tool_call>',  # arguments not an object
        '<tool_call>{"name": "get_weather", "arguments": {}}',  # never closed
        "plain words",
        '{"city": "Oslo"}',  # JSON, but no call
    ],
)
def test_a_malformed_call_stays_plain_content(text):
    assert parse_tool_calls(text, NAMES) == (text, [])


def test_a_completion_that_is_one_call_object_is_a_call():
    content, calls = parse_tool_calls(
        ' {"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"} ', NAMES
    )
    assert content is None and arguments(calls[0]) == {"city": "Rome"}


def test_forced_calls_read_the_shapes_the_schemas_constrain():
    required = forced_tool_calls('[{"name": "get_weather", "parameters": {"city": "Oslo"}}]', None)
    assert [(c["function"]["name"], arguments(c)) for c in required] == [("get_weather", {"city": "Oslo"})]
    named = forced_tool_calls('{"city": "Rome"}', "get_weather")
    assert [(c["function"]["name"], arguments(c)) for c in named] == [("get_weather", {"city": "Rome"})]
    for text, name in [('[{"name": "get_weather", "param', None), ("[]", None), ("[1]", None), ("[1]", "x")]:
        assert forced_tool_calls(text, name) is None


def streamed(pieces):
    stream = ToolCallStream(NAMES)
    sent = [stream.feed(p) for p in pieces]
    return sent, stream.finish()


def test_a_stream_sends_plain_content_as_it_comes():
    sent, (rest, calls) = streamed(["Hello", " there", ", friend", "."])
    assert sent == ["Hello", " there", ", friend", "."] and rest is None and calls == []


def test_a_stream_holds_back_what_may_open_a_tool_call_and_parses_it_at_the_end():
    pieces = [
        "Checking.",
        " <tool",
        "_call>",
        '{"name": "get_weather", ',
        '"arguments": {"city": "Oslo"}}',
        "</tool_call>",
    ]
    sent, (rest, calls) = streamed(pieces)
    assert "".join(sent) == "Checking. " and not any("<" in s for s in sent)
    assert rest is None and arguments(calls[0]) == {"city": "Oslo"}


def test_a_held_back_tag_that_turns_out_plain_is_sent():
    sent, (rest, calls) = streamed(["a <to", "day> b"])
    assert "".join(sent) + (rest or "") == "a <today> b" and calls == []


def test_a_stream_that_opens_with_an_object_is_held_and_may_be_a_bare_call():
    sent, (rest, calls) = streamed(['{"name": "get_weather",', ' "arguments": {"city": "Rome"}}'])
    assert sent == ["", ""] and rest is None and arguments(calls[0]) == {"city": "Rome"}
    sent, (rest, calls) = streamed(['{"not": ', '"a call"}'])
    assert rest == '{"not": "a call"}' and calls == []


def test_a_malformed_streamed_call_comes_back_as_content():
    sent, (rest, calls) = streamed(["ok ", '<tool_call>{"name": "get_weather"', "</tool_call>"])
    assert "".join(sent) + rest == 'ok <tool_call>{"name": "get_weather"</tool_call>' and calls == []
