"""Backends the gateway routes to: a local model deployment or a remote OpenAI-compatible API.

Both take the same request dict ({"prompt"} or {"messages"}, plus "params", and with tools or a
response format, "tools" for a model server and "openai" for a provider: those fields as the
client sent them) and return the same shapes as the engine: a Generation dict, or a stream of
Delta dicts. A provider's answer may add "tool_calls": its message's calls, or in a stream its
deltas' call fragments, in OpenAI's shape.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

import httpx

from models._private.core import tracing
from models._private.core.errors import EngineError, RequestError
from models._private.core.names import bearer
from models._private.engines.base import Delta, Generation
from serve._private.ai.config import ProviderConfig

log = logging.getLogger("swarmray.serve")

__all__ = ["InProcessBackend", "LocalBackend", "RemoteBackend"]


class LocalBackend:
    """A model deployment in this Serve application, through its DeploymentHandle."""

    def __init__(self, name: str, handle: Any):
        self.name = name
        self.handle = handle

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self.handle.complete.remote(request)

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        async for delta in self.handle.options(stream=True).stream.remote(request):
            yield delta


class InProcessBackend:
    """A model whose engine runs in this (gateway) process: a `colocate` model."""

    def __init__(self, name: str, server: Any):
        self.name = name
        self.server = server  # a ModelServer, the same class a model deployment runs

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self.server.complete(request)

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        async for delta in self.server.stream(request):
            yield delta


class RemoteBackend:
    """An OpenAI-compatible HTTP provider (httpx: async, pooled connections, streaming); each
    request carries the trace context of the request it serves (`traceparent`), if traced."""

    def __init__(self, config: ProviderConfig):
        self.name = config.name
        self.model = config.model
        key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        self.client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/") + "/",
            headers=bearer(key),
            timeout=httpx.Timeout(config.timeout_s),
        )

    def _body(self, request: dict[str, Any], stream: bool) -> tuple[str, dict[str, Any]]:
        # A provider gets the client's own tool and format fields, not the schema our engines
        # are constrained to.
        params = {k: v for k, v in request["params"].items() if k != "json_schema"}
        body = {"model": self.model, **params, **request.get("openai", {}), "stream": stream}
        body = {k: v for k, v in body.items() if v not in (None, [])}
        if stream:
            body["stream_options"] = {"include_usage": True}
        if "messages" in request:
            return "chat/completions", {**body, "messages": request["messages"]}
        return "completions", {**body, "prompt": request["prompt"]}

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        path, body = self._body(request, stream=False)
        response = await self.client.post(path, json=body, headers=tracing.headers())
        _raise_for_status(response)
        data = response.json()
        choice, usage = data["choices"][0], data.get("usage") or {}
        text = choice["message"]["content"] if "message" in choice else choice["text"]
        out = asdict(
            Generation(
                text or "",
                usage.get("prompt_tokens", 0),
                usage.get("completion_tokens", 0),
                choice.get("finish_reason") or "stop",
            )
        )
        if calls := (choice.get("message") or {}).get("tool_calls"):
            out["tool_calls"] = calls
        return out

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        path, body = self._body(request, stream=True)
        finish, usage = None, {}
        async with self.client.stream("POST", path, json=body, headers=tracing.headers()) as response:
            if response.status_code >= 400:
                await response.aread()
                _raise_for_status(response)
            async for line in response.aiter_lines():
                if not line.startswith("data:") or (data := line[5:].strip()) == "[DONE]":
                    continue
                chunk = json.loads(data)
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices", []):
                    delta = choice.get("delta") or {}
                    piece = delta.get("content") or choice.get("text") or ""
                    finish = choice.get("finish_reason") or finish
                    if delta.get("tool_calls"):
                        yield {**asdict(Delta(piece)), "tool_calls": delta["tool_calls"]}
                    elif piece:
                        yield asdict(Delta(piece))
        yield asdict(
            Delta("", finish or "stop", usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
        )


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json().get("error", {})
    except ValueError:
        error = {}
    message = error.get("message") or response.text[:200]
    # The caller's mistake is not the provider's failure: no fallback, no breaker. Its text is
    # the provider's: it goes to the log, and the client gets the code and parameter only.
    if response.status_code in (400, 422):
        code = error.get("code") or "invalid_request"
        log.warning("a provider refused a request (%s): %s", code, message)
        raise RequestError(error.get("param"), f"the provider refused the request ({code})", code)
    raise EngineError(f"provider answered {response.status_code}: {message}")
