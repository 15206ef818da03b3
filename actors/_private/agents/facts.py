"""The facts agent kind: documents into the facts service, and searches of it, as tasks."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from actors._private.agents.agent import Agent
from actors._private.services import FACTS_URL_KEY, ServiceClient
from actors._private.task import Task

__all__ = ["FactsAgent", "FactsIngestInput", "FactsSearchInput"]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FactsDocument(_Payload):
    """A document to ingest; the facts service checks the rest (sizes, times)."""

    id: str | None = Field(None, description="Its id; default: one is made.")
    title: str = Field("", description="Its title (graph search treats it as what it is about).")
    text: str = Field(min_length=1, description="Its text.")
    source: str = Field("", description="Where it came from.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Filterable fields.")
    reference_time: AwareDatetime | None = Field(None, description="When what it says was true.")


class FactsIngestInput(_Payload):
    """Documents for one namespace of the facts service, stored as one batch."""

    documents: list[FactsDocument] = Field(min_length=1, description="The documents.")
    namespace: str = Field("default", description="The facts namespace they go to.")


class FactsSearchInput(_Payload):
    """A search of the facts service."""

    query: str = Field(min_length=1, description="What to find.")
    k: int = Field(5, ge=1, le=100, description="Passages and facts to return, each.")
    mode: Literal["passages", "facts", "hybrid", "graph"] = Field("graph", description="How to search.")
    namespaces: list[str] | None = Field(None, description="Namespaces searched; default every one.")
    as_of: AwareDatetime | None = Field(None, description="Read the world as it was then.")
    depth: int = Field(1, ge=0, le=3, description="Graph mode: facts followed from the query's entities.")


class FactsAgent(Agent):
    """`facts.ingest` and `facts.search` against the system's facts service.

    ingest -> the batch's job ({"id", "state", "documents", "indexed", "extraction",
    "document_ids"}): its passages are searchable (a batch over the service's
    `sync_max_documents` is indexed in the background), its facts come as extraction runs.
    search -> {"passages": [{"document_id", "title", "text", "score"}], "facts": [{"id",
    "sentence", "subject", "predicate", "object", "valid_at", "invalid_at", "documents",
    "score"}], "seeds"}.

    Params: base_url (the service's …/v1; None reads it from the registry), timeout_s.
    """

    capabilities = ("facts.ingest", "facts.search")
    payloads = {"facts.ingest": FactsIngestInput, "facts.search": FactsSearchInput}
    descriptions = {
        "facts.ingest": "Stores documents in a facts namespace; returns the batch's job (facts "
        "follow as extraction runs).",
        "facts.search": "Finds passages and facts in the facts service (graph mode follows the "
        "query's entities).",
    }

    def __init__(self, base_url: str | None = None, timeout_s: float = 300.0):
        self.service = ServiceClient(FACTS_URL_KEY, base_url, timeout_s)

    async def handle(self, task: Task) -> Any:
        p = task.payload
        if task.capability == "facts.ingest":
            body = {"documents": [{k: v for k, v in d.items() if v is not None} for d in p["documents"]]}
            return await self.service.post(self.context, f"namespaces/{p['namespace']}/documents/batch", body)
        found = await self.service.post(self.context, "search", {k: v for k, v in p.items() if v is not None})
        return {
            "passages": [
                {k: h[k] for k in ("document_id", "title", "text")} | {"score": round(h["score"], 4)}
                for h in found["passages"]
            ],
            "facts": [
                {
                    "id": h["fact"]["id"],
                    "sentence": h["fact"]["sentence"],
                    "subject": h["fact"]["subject"],
                    "predicate": h["fact"]["predicate"],
                    "object": h["fact"]["object"],
                    "valid_at": h["fact"]["valid_at"],
                    "invalid_at": h["fact"]["invalid_at"],
                    "documents": sorted({p["document_id"] for p in h["fact"]["provenance"]}),
                    "score": round(h["score"], 4),
                }
                for h in found["facts"]
            ],
            "seeds": found["seeds"],
        }
