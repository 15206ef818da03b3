"""The LLM agent kind: a prompt template run against the AI service, with memory recall first."""

from __future__ import annotations

import string
from typing import Any

import httpx
import ray

from actors._private import names
from actors._private.agent import Agent
from actors._private.task import Task
from models._private.core.errors import PayloadError

__all__ = ["AI_URL_KEY", "LLMAgent"]

AI_URL_KEY = "ai.url"  # registry KV key under which `swarm up` publishes the AI service's URL


class LLMAgent(Agent):
    """`llm.generate`: fills a prompt template, calls the AI service, returns the reply.

    Params (from the pool's `agent.params`):
        model: The model (or alias) to ask.
        template: A `str.format` template over the payload's fields; `{memories}` is the
            recalled records' texts, one per line.
        system: An optional system message.
        recall_k: Records to recall from memory before asking (0: none).
        recall_scope: swarm, global or both.
        max_tokens, temperature: Sampling.
        base_url: The service's /v1 URL; None reads it from the registry, where `swarm up`
            puts it.

    Payload: the template's fields, e.g. {"input": "..."}, and optionally "namespaces", the
    memory namespaces to recall from (default: the memory's own). Output: {"text", "model",
    "usage", "recalled"}.
    """

    capabilities = ("llm.generate",)

    def __init__(
        self,
        model: str,
        template: str = "{input}",
        system: str | None = None,
        recall_k: int = 0,
        recall_scope: str = "both",
        max_tokens: int = 64,
        temperature: float = 0.7,
        base_url: str | None = None,
        timeout_s: float = 120.0,
    ):
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
        self.model, self.template, self.system = model, template, system
        self.fields = fields - {"memories"}
        self.recall_k, self.recall_scope = recall_k, recall_scope
        self.max_tokens, self.temperature = max_tokens, temperature
        self.base_url, self.timeout_s = base_url, timeout_s
        self._client: httpx.AsyncClient | None = None

    async def _url(self) -> str:
        if self.base_url:
            return self.base_url
        registry = ray.get_actor(names.REGISTRY, namespace=self.context.memory.ray_namespace)
        url = await registry.kv_get.remote(AI_URL_KEY)
        if not url:
            raise RuntimeError("no AI service is registered; configure `ai:` and run `swarm up`")
        return url

    async def handle(self, task: Task) -> Any:
        payload = dict(task.payload)
        namespaces = payload.pop("namespaces", None)  # where to recall from; not a template field
        if missing := sorted(self.fields - set(payload)):
            raise PayloadError("llm.generate", [(f, "required by the prompt template") for f in missing])
        recalled: list[dict] = []
        if self.recall_k:
            query = " ".join(str(payload[f]) for f in sorted(self.fields))
            recalled = await self.context.memory.search(
                query, self.recall_k, scope=self.recall_scope, namespaces=namespaces
            )
        prompt = self.template.format(**payload, memories="\n".join(h["record"]["text"] for h in recalled))
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": prompt}
        ]
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=await self._url(), timeout=self.timeout_s)
        response = await self._client.post(
            "chat/completions",
            json={
                "model": self.model,
                "messages": messages,
                "max_tokens": self.max_tokens,
                "temperature": self.temperature,
                "user": f"{self.context.swarm}/{self.context.agent_id}",
            },
        )
        if response.status_code >= 400:
            raise RuntimeError(f"AI service answered {response.status_code}: {response.text[:300]}")
        data = response.json()
        return {
            "text": data["choices"][0]["message"]["content"],
            "model": data["model"],
            "usage": data["usage"],
            "recalled": [h["record"]["id"] for h in recalled],
        }
