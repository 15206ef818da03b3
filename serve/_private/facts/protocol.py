"""The facts service's request bodies and response shapes (the stored models come from
`models`: DocumentIn, Document, FactIn, Fact, Entity)."""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from models._private.facts.schema import DocumentIn, Entity, Fact, FactIn
from models._private.facts.search import MAX_DEPTH, MAX_K, FactHit, PassageHit

__all__ = [
    "DocumentsBody",
    "EntityHit",
    "FactsBody",
    "FactsPage",
    "InvalidateBody",
    "JobOut",
    "MergeBody",
    "NeighboursOut",
    "PathOut",
    "SearchBody",
    "SearchOut",
    "SplitBody",
]

MAX_FACTS = 1000  # facts one request may post


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not ignored


class DocumentsBody(_Body):
    documents: list[DocumentIn] = Field(min_length=1, description="The batch, stored in one transaction.")


class FactsBody(_Body):
    facts: list[FactIn] = Field(min_length=1, max_length=MAX_FACTS)


class InvalidateBody(_Body):
    invalid_at: AwareDatetime | None = Field(None, description="When it stopped holding; default now.")


class MergeBody(_Body):
    other: str = Field(min_length=1, description="The entity that becomes part of this one.")


class SplitBody(_Body):
    documents: list[str] = Field(min_length=1, description="Whose mentions and facts move.")
    name: str = Field(min_length=1, max_length=500, description="The new entity's name.")


class SearchBody(_Body):
    query: str = Field(min_length=1, max_length=10_000)
    namespaces: list[str] | None = Field(
        None, min_length=1, description="Namespaces searched, results merged by score; default all."
    )
    k: int = Field(10, ge=1, le=MAX_K, description="Passages and facts returned, each.")
    mode: Literal["passages", "facts", "hybrid", "graph"] = "hybrid"
    as_of: AwareDatetime | None = Field(None, description="Read the world as it was then.")
    depth: int = Field(1, ge=0, le=MAX_DEPTH, description="Graph mode: facts followed from the seeds.")
    filters: dict[str, Any] | None = Field(
        None,
        description="Conditions on documents ({field: value | {$op: operand}}, over source and "
        "metadata keys); facts pass when a document they were read from does.",
    )


class JobOut(BaseModel):
    """An ingest job: its documents and how far indexing and extraction are."""

    id: str
    namespace: str
    state: Literal["indexing", "extracting", "done"]
    documents: int
    indexed: int
    extraction: dict[str, int] = Field(description="Documents per state: pending, done, failed, none.")
    document_ids: list[str] | None = Field(None, description="Given when the job is created.")


class EntityHit(Entity):
    namespace: str
    distance: int | None = Field(None, description="Facts between it and the seeds.")


class NeighboursOut(BaseModel):
    entities: list[EntityHit]
    facts: list[Fact]
    truncated: bool = Field(False, description="More facts lay within the depth than `limit`.")


class FactsPage(BaseModel):
    """A page of facts, in the order they began."""

    facts: list[Fact]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null after the last.")


class PathOut(BaseModel):
    found: bool
    facts: list[Fact] = Field(description="The chain from the first entity to the second, in order.")


class SearchOut(BaseModel):
    passages: list[PassageHit]
    facts: list[FactHit]
    entities: list[EntityHit] = Field(description="Graph mode: the seeds and the facts' ends.")
    seeds: list[str] = Field(description="Graph mode: ids of the entities the query named.")
