"""How agents reach the system's HTTP services (the AI service, the facts service): the URL
`swarm up` publishes in the registry, each call a client span of the task's trace (its
`traceparent` sent along), and answers turned into task outcomes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpx
import ray
from pydantic_core import to_jsonable_python

from models._private.core import names, tracing
from models._private.core.errors import RequestError
from models._private.core.names import bearer
from models._private.core.usage import Spent

__all__ = [
    "AI_URL_KEY",
    "FACTS_URL_KEY",
    "MCP_URL_KEY",
    "SERVICE_KEY_KEY",
    "TRACING_KEY",
    "ServiceClient",
    "error_of",
    "spending",
]

AI_URL_KEY = "ai.url"  # registry KV keys under which `swarm up` publishes each service's URL
FACTS_URL_KEY = "facts.url"
MCP_URL_KEY = "mcp.url"  # the /mcp endpoint's
SERVICE_KEY_KEY = "services.key"  # registry KV key of the API key agents send to both services
TRACING_KEY = "tracing"  # registry KV key of the system's TracingConfig, which `Client` traces by
_KEYS = {AI_URL_KEY: ("AI service", "ai:"), FACTS_URL_KEY: ("facts service", "facts:")}
_SPENDING: ContextVar[Spent | None] = ContextVar("swarmray_spending", default=None)


@contextmanager
def spending() -> Iterator[Spent]:
    """What the AI service answers within the block (a task's run, on its host) is added to the
    Spent it yields: the task's tokens and cost."""
    spent = Spent()
    token = _SPENDING.set(spent)
    try:
        yield spent
    finally:
        _SPENDING.reset(token)


def _count(response: httpx.Response) -> None:
    spent = _SPENDING.get()
    if spent is None:
        return
    try:
        usage = response.json().get("usage") or {}
    except (ValueError, AttributeError):
        usage = {}
    spent.add(
        Spent(
            requests=1,
            prompt_tokens=usage.get("prompt_tokens") or 0,
            completion_tokens=usage.get("completion_tokens") or 0,
            cost_microusd=int(response.headers.get(names.COST_HEADER, 0)),
        )
    )


class ServiceClient:
    """One agent's connection to one service, opened on first use.

    Args:
        key: The registry key of the service's URL (AI_URL_KEY or FACTS_URL_KEY).
        base_url: The service's …/v1 root; None reads it from the registry.
        timeout_s: Longest wait for an answer.
    """

    def __init__(self, key: str, base_url: str | None, timeout_s: float):
        self.key, self.base_url, self.timeout_s = key, base_url, timeout_s
        self._client: httpx.AsyncClient | None = None

    async def post(self, context: Any, path: str, body: dict[str, Any]) -> Any:
        """POSTs `body` to `path` under the service's root and returns the JSON answer.

        Raises:
            RequestError: the service refused the request (4xx): a retry would be refused too.
            RuntimeError: no such service is registered, or it failed (5xx): worth a retry.
                A 503 with Retry-After (a busy model) is asked again after that wait, as long
                as the waits stay within `timeout_s`.
        """
        if self._client is None:
            url = self.base_url or await self._registered(context)
            key = await _kv_get(context, SERVICE_KEY_KEY)  # set by `swarm up` when auth is on
            self._client = httpx.AsyncClient(
                base_url=url.rstrip("/") + "/", timeout=self.timeout_s, headers=bearer(key)
            )
        # Checked payloads hold datetimes and decimals: JSON them as pydantic would.
        content = to_jsonable_python(body)
        deadline = time.monotonic() + self.timeout_s
        while True:
            response = await self._send(path, content)
            # A busy service (a model's full queue) refuses at once with a 503 and says when to
            # come back: wait that long and ask again, while the wait fits this client's timeout.
            wait = _retry_after_s(response)
            if wait is None or time.monotonic() + wait > deadline:
                break
            await asyncio.sleep(wait)
        if response.status_code < 400:
            if self.key == AI_URL_KEY:
                _count(response)
            return response.json()
        what = _KEYS[self.key][0]
        param, message = error_of(response)
        if response.status_code < 500:
            raise RequestError(param, f"the {what} refused it ({response.status_code}): {message}")
        raise RuntimeError(f"the {what} answered {response.status_code}: {message}")

    async def _send(self, path: str, content: Any) -> httpx.Response:
        """One POST, in a client span whose context goes along as `traceparent` (tracing on)."""
        if not tracing.enabled():
            return await self._client.post(path, json=content)
        url = f"{self._client.base_url}{path}"
        attributes = {"http.request.method": "POST", "url.full": url, "swarmray.service": _KEYS[self.key][0]}
        with tracing.span(f"http.client POST {path}", kind="client", attributes=attributes) as span:
            response = await self._client.post(path, json=content, headers=tracing.headers())
            span.set_attribute("http.response.status_code", response.status_code)
            return response

    async def _registered(self, context: Any) -> str:
        url = await _kv_get(context, self.key)
        if not url:
            what, section = _KEYS[self.key]
            raise RuntimeError(f"no {what} is registered; configure `{section}` and run `swarm up`")
        return url


async def _kv_get(context: Any, key: str) -> Any:
    # Through the agent's TaskClient when it has one (the registry it reaches), else Ray's.
    if (tasks := getattr(context, "tasks", None)) is not None:
        return await tasks.kv_get(key)
    registry = ray.get_actor(names.REGISTRY, namespace=context.memory.ray_namespace)
    return await registry.kv_get.remote(key)


def _retry_after_s(response: httpx.Response) -> float | None:
    """The seconds a 503 asks the client to wait before it tries again (its Retry-After, in
    seconds), else None."""
    if response.status_code != 503:
        return None
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def error_of(response: httpx.Response) -> tuple[str | None, str]:
    """(param, message) of a service's OpenAI-style error body, else (None, the body's start)."""
    try:
        error = response.json()["error"]
        return error.get("param"), error["message"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, response.text[:300]
