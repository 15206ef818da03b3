"""A model server (serve/_private/ai/deployments.py) offers tools to a model whose chat template
cannot render them, and turns tool calls and results into plain messages: the real
ModelServer, the real transformers engine and a tiny model's real template."""

import asyncio

import pytest

from models._private.engines.tiny_model import build_tiny_model
from models._private.engines.tool_calls import fallback_messages, tool_prompt
from serve._private.ai.deployments import ModelServer

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
}
MESSAGES = [
    {"role": "user", "content": "weather in Oslo?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = build_tiny_model(str(tmp_path_factory.mktemp("tiny")))
    return ModelServer({"name": "tiny", "source": path, "engine": {"max_model_len": 512}})


def test_a_template_without_tools_gets_them_in_the_system_message_and_plain_tool_turns(server):
    assert not server.engine.supports_tools  # the tiny model's template takes role and content only
    prompt, chat = asyncio.run(server._prompt({"messages": MESSAGES, "tools": TOOLS}))
    assert chat and prompt == server.engine.chat_prompt(fallback_messages(MESSAGES, TOOLS))
    assert prompt.startswith("<|system|>\n" + tool_prompt(TOOLS))
    assert (
        '<|assistant|>\n<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
        in prompt
    )
    assert "<|user|>\n<tool_response>\nsunny\n</tool_response>" in prompt
    # Without tools (tool_choice none) the calls and results are still turned plain.
    bare, _ = asyncio.run(server._prompt({"messages": MESSAGES}))
    assert "<tools>" not in bare and "<tool_response>" in bare


def test_a_chat_with_tool_turns_completes(server):
    out = asyncio.run(
        server.complete({"messages": MESSAGES, "tools": TOOLS, "params": {"max_tokens": 3, "temperature": 0}})
    )
    assert out["completion_tokens"] >= 1 and out["prompt_tokens"] > 0


def test_counters_count_the_requests_answered_the_engine_batches_and_its_busy_time(server):
    before = server.counters()

    async def two_at_once():
        request = {"prompt": "the quick brown fox", "params": {"max_tokens": 4, "temperature": 0}}
        return await asyncio.gather(server.complete(request), server.complete(request))

    asyncio.run(two_at_once())
    after = server.counters()
    assert after["requests"] - before["requests"] == 2
    assert after["batches"] > before["batches"]  # the engine's own count of its batches
    assert after["busy_s"] > before["busy_s"]
    # Decode passes, and the rows they decoded: one or both requests in each (the second may
    # join the first a pass late); rows / steps is the engine's mean batch.
    steps, rows = after["steps"] - before["steps"], after["row_steps"] - before["row_steps"]
    assert 0 < steps <= rows <= 2 * steps
    # Prefills: one for both if they met, else one each; a second one joined a running batch
    # (counted in `joined`) or started its own (the first had ended).
    prefills, joined = after["prefills"] - before["prefills"], after["joined"] - before["joined"]
    assert 1 <= prefills <= 2 and 0 <= joined <= prefills - 1
