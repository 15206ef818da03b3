"""The LLM agent kind: a prompt template run against the AI service, grounded first on what
the memory recalls and what the facts service finds."""

from __future__ import annotations

import string
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from actors._private.agents.agent import Agent
from actors._private.services import AI_URL_KEY, FACTS_URL_KEY, ServiceClient
from actors._private.task import Task
from models._private.core.errors import PayloadError

__all__ = ["LLMAgent", "LLMGenerateInput"]


class LLMGenerateInput(BaseModel):
    """The prompt template's fields (`input` for the default template), and where to recall from."""

    model_config = ConfigDict(extra="allow")  # any other field the agent's template names

    input: str | None = Field(
        None,
        description="The text for the template's {input} (the whole prompt by default); "
        "required when the template has it.",
    )
    namespaces: list[str] | None = Field(
        None, description="Memory namespaces to recall from; default the memory's own."
    )
    facts_namespaces: list[str] | None = Field(
        None, description="Facts namespaces to search; default the agent's `facts_namespaces` param."
    )


class LLMAgent(Agent):
    """`llm.generate`: fills a prompt template, calls the AI service, returns the reply.

    Params (from the pool's `agent.params`):
        model: The model (or alias) to ask.
        template: A `str.format` template over the payload's fields; `{memories}` is the
            recalled records' texts, one per line; `{facts}` what the facts service found:
            the facts' sentences, then the passages (title: text), one per line.
        system: An optional system message.
        recall_k: Records to recall from memory before asking (0: none).
        recall_scope: swarm, global or both.
        facts_k: Facts and passages (each) to ask the facts service for (0: none).
        facts_mode: The facts search's mode (graph follows the query's entities a hop).
        facts_namespaces: Facts namespaces searched; None: every one.
        max_tokens, temperature: Sampling.
        base_url, facts_url: The services' /v1 URLs; None reads them from the registry, where
            `swarm up` puts them.

    Payload (`LLMGenerateInput`): the template's fields, e.g. {"input": "..."}, and optionally
    "namespaces", the memory namespaces to recall from (default: the memory's own), and
    "facts_namespaces", the facts namespaces to search (default: the `facts_namespaces` param).
    Output: {"text", "model", "usage", "recalled", "grounding"} (grounding: the ids of the facts
    and documents used).
    """

    capabilities = ("llm.generate",)
    payloads = {"llm.generate": LLMGenerateInput}
    descriptions = {
        "llm.generate": "Fills the agent's prompt template (with recalled memories and facts, if "
        "set), asks the AI service, returns the reply."
    }

    def __init__(
        self,
        model: str,
        template: str = "{input}",
        system: str | None = None,
        recall_k: int = 0,
        recall_scope: str = "both",
        facts_k: int = 0,
        facts_mode: Literal["passages", "facts", "hybrid", "graph"] = "graph",
        facts_namespaces: list[str] | None = None,
        max_tokens: int = 64,
        temperature: float = 0.7,
        base_url: str | None = None,
        facts_url: str | None = None,
        timeout_s: float = 120.0,
    ):
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
        self.model, self.template, self.system = model, template, system
        self.fields = fields - {"memories", "facts"}
        self.recall_k, self.recall_scope = recall_k, recall_scope
        self.facts_k, self.facts_mode, self.facts_namespaces = facts_k, facts_mode, facts_namespaces
        self.max_tokens, self.temperature = max_tokens, temperature
        self.ai = ServiceClient(AI_URL_KEY, base_url, timeout_s)
        self.facts = ServiceClient(FACTS_URL_KEY, facts_url, timeout_s)

    async def handle(self, task: Task) -> Any:
        payload = dict(task.payload)
        namespaces = payload.pop("namespaces", None)  # where to recall from; not a template field
        facts_namespaces = payload.pop("facts_namespaces", None) or self.facts_namespaces
        if missing := sorted(f for f in self.fields if payload.get(f) is None):
            raise PayloadError("llm.generate", [(f, "required by the prompt template") for f in missing])
        query = " ".join(str(payload[f]) for f in sorted(self.fields))
        recalled: list[dict] = []
        if self.recall_k:
            recalled = await self.context.memory.search(
                query, self.recall_k, scope=self.recall_scope, namespaces=namespaces
            )
        found: dict[str, Any] = {"facts": [], "passages": []}
        if self.facts_k:
            body = {"query": query, "k": self.facts_k, "mode": self.facts_mode}
            body["namespaces"] = facts_namespaces
            found = await self.facts.post(self.context, "search", body)
        lines = [h["fact"]["sentence"] for h in found["facts"]] + [
            f"{p['title']}: {p['text']}" if p["title"] else p["text"] for p in found["passages"]
        ]
        prompt = self.template.format(
            **payload, memories="\n".join(h["record"]["text"] for h in recalled), facts="\n".join(lines)
        )
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": prompt}
        ]
        data = await self.ai.post(
            self.context,
            "chat/completions",
            {
                "model": self.model,
                "messages": messages,
                "max_tokens": self.max_tokens,
                "temperature": self.temperature,
                "user": f"{self.context.swarm}/{self.context.agent_id}",
            },
        )
        return {
            "text": data["choices"][0]["message"]["content"],
            "model": data["model"],
            "usage": data["usage"],
            "recalled": [h["record"]["id"] for h in recalled],
            "grounding": {
                "facts": [h["fact"]["id"] for h in found["facts"]],
                "passages": [p["document_id"] for p in found["passages"]],
            },
        }
