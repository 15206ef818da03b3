"""The chat requests a tool-using agent sent for one task, rebuilt from the task's output, so
that a benchmark can replay the very same requests through the engine in-process."""

from __future__ import annotations

import copy
import json
from typing import Any

__all__ = ["chat_requests"]


def _choice(choice: Any) -> Any:
    # As the agent sends it: a plain function name is OpenAI's named choice.
    if isinstance(choice, str) and choice not in ("none", "auto", "required"):
        return {"type": "function", "function": {"name": choice}}
    return choice


def chat_requests(
    params: dict[str, Any], tools: list[dict[str, Any]], user_input: str, output: dict[str, Any]
) -> list[dict[str, Any]]:
    """The POST /chat/completions bodies a `ToolAgent` of `params` (its pool's agent.params)
    sent to answer `user_input`, one per step of `output` (the task's output), in order;
    `tools` are the function tools it offered (OpenAI's shape). The `user` field, which names
    the agent and which no model reads, is left out.

    A step's tool calls are in `output` only when they ran; their results (or errors) become
    the `tool` messages of the next request, as the agent wrote them.
    """
    messages: list[dict[str, Any]] = []
    if params.get("system"):
        messages.append({"role": "system", "content": params["system"]})
    messages.append({"role": "user", "content": user_input})
    later = params.get("tool_choice", "auto")
    first = params.get("first_tool_choice") or later
    bodies = []
    for step in output["steps"]:
        body: dict[str, Any] = {
            "model": params["model"],
            "messages": copy.deepcopy(messages),
            "max_tokens": params.get("max_tokens", 256),
            "temperature": params.get("temperature", 0.0),
        }
        if tools:
            body["tools"] = tools
            body["tool_choice"] = _choice(first if step["n"] == 0 else later)
            if params.get("parallel_tool_calls") is not None:
                body["parallel_tool_calls"] = params["parallel_tool_calls"]
        bodies.append(body)
        calls = step["tool_calls"]
        if not calls:
            continue
        messages.append(
            {
                "role": "assistant",
                "content": step["content"],
                "tool_calls": [
                    {
                        "type": "function",
                        "id": c["id"],
                        "function": {"name": c["name"], "arguments": c["arguments"]},
                    }
                    for c in calls
                ],
            }
        )
        for c in calls:
            content = c["result"] if "result" in c else {"error": c["error"]}
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": c["id"],
                    "content": content if isinstance(content, str) else json.dumps(content),
                }
            )
    return bodies
