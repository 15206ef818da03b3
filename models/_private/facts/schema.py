"""What the facts store holds and is configured by: documents, entities, facts (bi-temporal
edges with provenance), and what an extractor hands the store.

Times are timezone-aware UTC datetimes at this boundary and epoch seconds inside SQLite; they
cross it through `to_epoch` and `from_epoch` only, never through pydantic's reading of numbers
(which takes those past 2e10, the years before 1336 and after 2603, for milliseconds).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from fractions import Fraction
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    ValidationInfo,
    field_validator,
)

from models._private.core.config import ConfigModel

__all__ = [
    "Document",
    "DocumentIn",
    "Entity",
    "EntityMention",
    "Extraction",
    "Fact",
    "FactIn",
    "FactsConfig",
    "Span",
    "from_epoch",
    "to_epoch",
]


class FactsConfig(ConfigModel):
    """One namespace's facts store: which predicates are functional, and entity resolution."""

    functional_predicates: list[str] = Field(
        default_factory=list,
        description="Predicates with one object at a time per subject (e.g. works_for, "
        "capital_of): a new fact on one invalidates the subject's earlier facts on it, and only "
        "those.",
    )
    fuzzy_min_ratio: float = Field(
        95.0,
        ge=0,
        le=100,
        description="Least rapidfuzz ratio (0-100) of two normalised names of one type that "
        "makes them one entity when no exact name or alias matches; 100 turns fuzzy matching off. "
        "At 95 'Barack Obama' and 'Barak Obama' (95.7) merge, 'John Smith' and 'Jon Smith' (94.7) "
        "do not.",
    )
    max_text_chars: int = Field(200_000, gt=0, description="Longest document text accepted.")
    compact_log_after_mb: float = Field(
        64.0,
        gt=0,
        description="Size of the memory's log past which it is compacted (a snapshot, then an "
        "empty log) once it is also larger than the live records were at the last compaction; "
        "it is compacted anyway once records deleted or replaced outnumber the live ones.",
    )


def _not_blank(v: str, field: str) -> str:
    if not v.strip():
        raise ValueError(f"{field} is blank")
    return v


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Span(_Model):
    """Where in a document a fact or mention was read: character offsets, end exclusive."""

    start: NonNegativeInt
    end: NonNegativeInt


class DocumentIn(_Model):
    """A document (an episode) as it is posted."""

    id: str | None = Field(None, min_length=1, max_length=200, description="Given id, or one is made.")
    title: str = Field("", max_length=1000)
    text: str = Field(min_length=1, description="The text; chunked into the namespace's memory.")
    source: str = Field("", max_length=1000, description="Where it came from (a URL, a file).")
    metadata: dict[str, Any] = Field(default_factory=dict)
    reference_time: AwareDatetime | None = Field(
        None, description="When what it says was true, if known; facts read from it hold from then."
    )

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        return _not_blank(v, "text")

    @field_validator("id")
    @classmethod
    def _addressable(cls, v: str | None) -> str | None:
        # The service reads and deletes a document at …/documents/{id}, slashes and all; a "." or
        # ".." segment is one that clients and proxies resolve away, so no URL could reach it.
        if v is not None and any(part in (".", "..") for part in v.split("/")):
            raise ValueError('has a "." or ".." segment, which no URL can address')
        return v


class Document(DocumentIn):
    """A stored document, and how far the extractor has read it."""

    id: str
    ingested_at: AwareDatetime
    extraction: Literal["pending", "done", "failed", "none"] = Field(
        "none", description="pending: waiting for the extractor; none: no extractor reads it."
    )
    extraction_error: str | None = Field(None, description="Why extraction failed, if it did.")
    job: str | None = Field(None, description="The ingest job that brought it, if any.")


class EntityMention(_Model):
    """An entity an extractor found in a document, with where it was read."""

    name: str = Field(min_length=1, max_length=500)
    type: str = Field("thing", min_length=1, max_length=100, description="e.g. PERSON, ORG, GPE.")
    spans: list[Span] = Field(default_factory=list)


class FactIn(_Model):
    """A fact as posted, or as an extractor read it: subject, predicate, object.

    The object is an entity (`object_type` set) or a literal value (`object_type` None).
    """

    subject: str = Field(min_length=1, max_length=500)
    subject_type: str = Field("thing", min_length=1, max_length=100)
    predicate: str = Field(min_length=1, max_length=200)
    object: str = Field(min_length=1, max_length=2000)
    object_type: str | None = Field("thing", max_length=100, description="None: a literal value.")
    sentence: str | None = Field(None, max_length=5000, description="The fact as a sentence.")
    valid_at: AwareDatetime | None = Field(
        None, description="When it began to hold; default: the document's reference time, else now."
    )
    invalid_at: AwareDatetime | None = Field(None, description="When it stopped holding, if known.")
    confidence: float = Field(1.0, ge=0, le=1)
    spans: list[Span] = Field(default_factory=list, description="Where the document says it.")

    @field_validator("subject", "predicate", "object", "sentence")
    @classmethod
    def _not_blank(cls, v: str | None, info: ValidationInfo) -> str | None:
        # A blank sentence (or one made of blank names) is stored, then refused by the search
        # index: refused here, before anything is stored.
        return None if v is None else _not_blank(v, info.field_name)

    def text(self) -> str:
        """The fact as a sentence: the given one, else subject, predicate and object joined."""
        return self.sentence or f"{self.subject} {self.predicate.replace('_', ' ')} {self.object}"


class Extraction(_Model):
    """What one extractor read from one document."""

    extractor: str = Field(description="Which extractor: explicit, spacy, llm.")
    entities: list[EntityMention] = Field(default_factory=list)
    facts: list[FactIn] = Field(default_factory=list)


class Entity(_Model):
    """A resolved entity of one namespace."""

    id: str
    name: str
    type: str
    aliases: list[str]
    mentions: int = Field(description="Times documents mention it.")
    documents: list[str] = Field(description="Ids of the documents that mention it.")


class Fact(_Model):
    """A stored fact: an edge from a subject entity to an object entity or value, with when it
    held in the world (`valid_at`/`invalid_at`) and when the store recorded and retired it
    (`created_at`/`expired_at`), and the documents it was read from. `valid_at` is None when
    neither the fact, its text nor its document's reference time said when it began: reads
    `as_of` then count it from `created_at`, when it was learnt."""

    id: str
    subject_id: str
    subject: str
    predicate: str
    object_id: str | None
    object: str
    sentence: str
    confidence: float
    extractor: str
    valid_at: AwareDatetime | None
    invalid_at: AwareDatetime | None
    created_at: AwareDatetime
    expired_at: AwareDatetime | None
    provenance: list[dict[str, Any]] = Field(description="[{document_id, start, end}]")


def to_epoch(t: datetime | None) -> float | None:
    """Epoch seconds of an aware datetime (None stays None)."""
    return None if t is None else t.timestamp()


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def from_epoch(t: float | None) -> datetime | None:
    """A UTC datetime of epoch seconds (None stays None), in any year a datetime holds.

    Exact: the microsecond nearest to `t`'s exact value, so `to_epoch(from_epoch(t)) == t` for
    every `t` that `to_epoch` made, and a time round-trips to the second in any year (to the
    microsecond where a float holds it, within about 270 years of 1970).
    """
    return None if t is None else _EPOCH + timedelta(microseconds=round(Fraction(t) * 1_000_000))
