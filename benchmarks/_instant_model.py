"""An OpenAI-compatible chat endpoint that answers at once, for measuring what a fleet's
framework costs when the model costs nothing (`benchmarks.fleet --model instant`).

A request that must call a tool (`tool_choice` "required" or a named function) gets a call of
the first tool with `{}` as its arguments; any other gets the content "Done.". The usage counts
the prompt's characters as its tokens and the answer as a fixed few: the figures compare two
frameworks driving the same endpoint, not a model.

Run as its own process: `python -m benchmarks._instant_model PORT` (uvicorn, one worker).
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MODEL = "instant"
ANSWER = "Done."
COMPLETION_TOKENS = 4  # what one reply counts as, tool call or answer


def reply(body: dict[str, Any]) -> dict[str, Any]:
    """The chat completion for one request body."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    forced = choice == "required" or isinstance(choice, dict)
    if tools and forced:
        name = choice["function"]["name"] if isinstance(choice, dict) else tools[0]["function"]["name"]
        call = {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function"}
        call["function"] = {"name": name, "arguments": "{}"}
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish = "tool_calls"
    else:
        message, finish = {"role": "assistant", "content": ANSWER}, "stop"
    prompt = sum(len(json.dumps(m.get("content") or "")) for m in body.get("messages", []))
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", MODEL),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": prompt + COMPLETION_TOKENS,
        },
    }


async def chat(request: Request) -> JSONResponse:
    return JSONResponse(reply(await request.json()))


app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
