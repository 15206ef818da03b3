"""A scripted OpenAI-compatible provider: a real HTTP server on 127.0.0.1 that answers chat
completions from a script (or a function of the request) and records every request."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Reply", "ScriptedProvider", "completion", "text_completion", "tool_call"]

# A message content, an assistant message (a dict: "content" and/or "tool_calls", as OpenAI
# answers them), or an HTTP error status and its message.
Reply = str | dict[str, Any] | tuple[int, str]


class ScriptedProvider:
    """An OpenAI-compatible service on a free port of 127.0.0.1. Each POST to
    /v1/chat/completions or /v1/completions gets the next reply of `script`, or `respond(body)`
    when that is set; every request body is kept in `requests`, and `peak` is the most answered
    at once."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.respond: Callable[[dict[str, Any]], Reply] | None = None
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.peak = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: with Nagle's algorithm the body waits for
            # the client's delayed ACK (40 ms), which would make every answer slow.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                provider._answer(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        body = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))
        with self._lock:
            self.requests.append(body)
            self.authorizations.append(handler.headers.get("Authorization"))
            self._in_flight += 1
            self.peak = max(self.peak, self._in_flight)
            scripted = None if self.respond else self.script.pop(0) if self.script else (500, "script ended")
        try:
            reply = self.respond(body) if self.respond else scripted
        finally:
            with self._lock:  # before the answer is sent: the client's next request may follow at once
                self._in_flight -= 1
        if handler.path not in ("/v1/chat/completions", "/v1/completions"):
            reply = (404, f"no route {handler.path}")
        if isinstance(reply, str | dict):
            chat = handler.path == "/v1/chat/completions"
            status, payload = 200, (completion if chat else text_completion)(body["model"], reply)
        else:
            status = reply[0]
            payload = {"error": {"message": reply[1], "type": "server_error", "param": None, "code": None}}
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (a test killed it mid-request) is not the server's error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


USAGE = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}  # what every answer bills


def completion(model: str, content: str | dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat.completion with one choice and usage; `content` a dict is the whole
    assistant message, and with `tool_calls` in it the answer finishes with "tool_calls"."""
    message = {"role": "assistant", "content": None, **content} if isinstance(content, dict) else None
    if message is not None:
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        return {
            "id": "chatcmpl-scripted",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": dict(USAGE),
        }
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": dict(USAGE),
    }


def text_completion(model: str, text: str) -> dict[str, Any]:
    """An OpenAI text_completion with one choice and the same usage as `completion`."""
    return {
        "id": "cmpl-scripted",
        "object": "text_completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
        "usage": dict(USAGE),
    }


def tool_call(call_id: str, name: str, arguments: dict[str, Any] | str) -> dict[str, Any]:
    """One OpenAI tool call; `arguments` a dict is sent as its JSON, a str as it is."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
