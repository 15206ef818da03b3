"""How the gateway answers a chat with tools (serve/_private/ai/serving.py `_ToolAnswer`): tool
calls read out of a model's text, whole and as streamed chunks that the official openai
client's own stream assembler (`ChatCompletionStreamState`) puts back together."""

import json

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from serve._private.ai.protocol import ChatBody
from serve._private.ai.serving import _ToolAnswer

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"unit": {"type": "string"}}},
    },
}


def chat(**fields):
    return ChatBody.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER], **fields}
    )


def pieces(text, finish="stop", size=3):
    """A backend's stream of `text`: pieces of `size` characters, then the finish."""
    out = [{"text": text[i : i + size], "finish_reason": None} for i in range(0, len(text), size)]
    return [*out, {"text": "", "finish_reason": finish, "prompt_tokens": 5, "completion_tokens": 7}]


def assembled(answer, stream, final=True):
    """The completion the openai client assembles from the chunks `answer` makes of `stream`
    (its snapshot when not `final`: the client refuses to finish one cut by its length)."""
    state = ChatCompletionStreamState(input_tools=[WEATHER])
    for piece in stream:
        for c in answer.choices(piece):
            chunk = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "m",
                "choices": [c],
            }
            state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return (state.get_final_completion() if final else state.current_completion_snapshot).choices[0]


def calls_of(message):
    return [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        (
            {"tool_choice": "required"},
            '[{"name": "get_weather", "parameters": {"unit": "c"}}, '
            '{"name": "get_weather", "parameters": {"unit": "f"}}]',
        ),
        ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, '{"unit": "c"}'),
        ({}, 'Sure. <tool_call>{"name": "get_weather", "arguments": {"unit": "c"}}</tool_call>'),
    ],
)
def test_calls_whole_and_streamed_agree_and_the_client_assembles_them(fields, text):
    content, calls, finish = _ToolAnswer(chat(**fields), remote=False).message(
        {"text": text, "finish_reason": "stop"}
    )
    assert finish == "tool_calls" and calls and all(c["id"].startswith("call_") for c in calls)
    streamed = assembled(_ToolAnswer(chat(**fields), remote=False), pieces(text))
    assert streamed.finish_reason == "tool_calls"
    assert calls_of(streamed.message) == [
        (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls
    ]
    # A stream cannot take back the white space it sent before a call; the whole answer strips it.
    assert ((streamed.message.content or "").strip() or None) == content
    ids = [c.id for c in streamed.message.tool_calls]
    assert len(set(ids)) == len(ids) and all(i.startswith("call_") for i in ids)


def test_a_forced_call_cut_by_max_tokens_is_content_with_its_finish_reason():
    text = '[{"name": "get_weather", "param'
    answer = _ToolAnswer(chat(tool_choice="required"), remote=False)
    assert answer.message({"text": text, "finish_reason": "length"}) == (text, None, "length")
    streamed = assembled(
        _ToolAnswer(chat(tool_choice="required"), remote=False), pieces(text, "length"), final=False
    )
    assert (
        streamed.message.content == text
        and not streamed.message.tool_calls
        and streamed.finish_reason == "length"
    )


def test_plain_content_streams_piece_by_piece_as_before():
    answer = _ToolAnswer(chat(tool_choice="none"), remote=False)
    made = [answer.choices(p) for p in pieces("hello there")]
    assert [len(m) for m in made] == [1] * len(made)  # one chunk a piece, the last with the finish
    assert made[0][0]["delta"] == {"role": "assistant", "content": "hel"}
    assert made[-1][0] == {"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}
    auto = assembled(_ToolAnswer(chat(), remote=False), pieces("no call here"))
    assert auto.message.content == "no call here" and auto.finish_reason == "stop"


def test_a_providers_calls_are_taken_as_they_are():
    call = {"id": "call_x", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    answer = _ToolAnswer(chat(), remote=True)
    out = {"text": "", "finish_reason": "tool_calls", "tool_calls": [call]}
    assert answer.message(out) == (None, [call], "tool_calls")
    # Text from a provider is its content: the provider parsed its model's calls itself.
    text = '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>'
    assert _ToolAnswer(chat(), remote=True).message({"text": text, "finish_reason": "stop"}) == (
        text,
        None,
        "stop",
    )
