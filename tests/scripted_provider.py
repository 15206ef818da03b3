"""A scripted OpenAI-compatible provider: a real HTTP server on 127.0.0.1 that answers chat
completions from a script (or a function of the request) and records every request. A reply
is a content string, a whole message (a dict, which may hold `tool_calls`), or an error; a
request with `stream: true` is answered with OpenAI's server-sent events when `streams` is set
(else with a JSON body, which a client reads as a stream without chunks or usage)."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Reply", "ScriptedProvider", "completion", "stream_events", "text_completion", "tool_call"]

# A message content, a whole assistant message ({"content", "tool_calls"?}), or an HTTP error
# status and its message (and headers to send with it).
Reply = str | dict[str, Any] | tuple[int, str] | tuple[int, str, dict[str, str]]


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
        self.streams = False  # answer `stream: true` with server-sent events
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
        chat = handler.path == "/v1/chat/completions"
        if self.streams and not isinstance(reply, tuple) and body.get("stream"):
            data = "".join(f"data: {json.dumps(e)}\n\n" for e in stream_events(body["model"], reply, chat))
            data += "data: [DONE]\n\n"
            handler.send_response(200)
            handler.send_header("Content-Type", "text/event-stream")
            handler.send_header("Content-Length", str(len(data.encode())))
            handler.end_headers()
            handler.wfile.write(data.encode())
            return
        if isinstance(reply, (str, dict)):
            status, payload = 200, (completion if chat else text_completion)(body["model"], reply)
        else:
            status = reply[0]
            payload = {"error": {"message": reply[1], "type": "server_error", "param": None, "code": None}}
        data = json.dumps(payload).encode()
        handler.send_response(status)
        for name, value in (reply[2] if isinstance(reply, tuple) and len(reply) > 2 else {}).items():
            handler.send_header(name, value)
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


def tool_call(name: str, arguments: dict[str, Any] | str, id: str = "call_scripted") -> dict[str, Any]:
    """An OpenAI tool call, for a scripted message's `tool_calls`; `arguments` a dict is sent as
    its JSON, a str as it is (a malformed call, say)."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": id, "type": "function", "function": {"name": name, "arguments": args}}


def completion(model: str, reply: str | dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat.completion with one choice and usage; `reply` is the content or the message."""
    message = (
        {"role": "assistant", "content": reply}
        if isinstance(reply, str)
        else {"role": "assistant", "content": None, **reply}
    )
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": dict(USAGE),
    }


def stream_events(model: str, reply: str | dict[str, Any], chat: bool = True) -> list[dict[str, Any]]:
    """The chunks OpenAI streams for `reply`: the role, the content in two pieces, each tool call
    (index, id, type and name first, then its arguments in two pieces), the finish reason, and
    the usage."""
    message = {"content": reply} if isinstance(reply, str) else reply
    content, calls = message.get("content") or "", message.get("tool_calls") or []
    head = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 0, "model": model}

    def event(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if not chat:
            return {
                **head,
                "choices": [{"index": 0, "text": delta.get("content", ""), "finish_reason": finish}],
            }
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    events = [event({"role": "assistant", "content": ""})]
    half = len(content) // 2
    events += [event({"content": part}) for part in (content[:half], content[half:]) if part]
    for i, call in enumerate(calls):
        fn, cut = call["function"], len(call["function"]["arguments"]) // 2
        first = {
            "index": i,
            "id": call["id"],
            "type": "function",
            "function": {"name": fn["name"], "arguments": ""},
        }
        events.append(event({"tool_calls": [first]}))
        for part in (fn["arguments"][:cut], fn["arguments"][cut:]):
            events.append(event({"tool_calls": [{"index": i, "function": {"arguments": part}}]}))
    events.append(event({}, "tool_calls" if calls else "stop"))
    events.append({**head, "choices": [], "usage": dict(USAGE)})
    return events


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
