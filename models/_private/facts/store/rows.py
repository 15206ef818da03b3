"""The facts store's rows: the columns of a fact as reads select it, and the helpers that turn
rows into models, make ids, and pass long id lists to SQLite in parts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from models._private.facts.schema import Document, DocumentIn, Fact, from_epoch

__all__ = [
    "FACT_COLUMNS",
    "FACT_FIELDS",
    "FACT_FROM",
    "FOREVER",
    "document_from_row",
    "fact_from_row",
    "id_chunks",
    "make_id",
    "provenance_entry",
    "same_content",
]

FACT_COLUMNS = (
    "f.id, f.subject_id, s.name, f.predicate, f.object_id, COALESCE(o.name, f.object_value), "
    "f.sentence, f.confidence, f.extractor, CASE WHEN f.valid_stated THEN f.valid_at END, f.invalid_at, "
    "f.created_at, f.expired_at"
)
FACT_FIELDS = [
    "id",
    "subject_id",
    "subject",
    "predicate",
    "object_id",
    "object",
    "sentence",
    "confidence",
    "extractor",
    "valid_at",
    "invalid_at",
    "created_at",
    "expired_at",
]
_FACT_TIMES = ("valid_at", "invalid_at", "created_at", "expired_at")
FACT_FROM = "facts f JOIN entities s ON s.id = f.subject_id LEFT JOIN entities o ON o.id = f.object_id"


FOREVER = float("inf")


def id_chunks(ids: list[str], size: int = 500) -> Iterator[tuple[list[str], str]]:
    """`ids` in parts SQLite takes as parameters at once, each with its `?,?,…` placeholders."""
    for i in range(0, len(ids), size):
        part = ids[i : i + size]
        yield part, ",".join("?" * len(part))


def provenance_entry(document_id: str, start: int, end: int) -> dict[str, Any]:
    """A provenance entry; -1, -1 in the table is a span not known."""
    return {
        "document_id": document_id,
        "start": start if start >= 0 else None,
        "end": end if end >= 0 else None,
    }


def document_from_row(row: tuple) -> Document:
    id_, title, text, source, metadata, reference_time, ingested_at, state, error, job = row[:10]
    return Document(
        id=id_,
        title=title,
        text=text,
        source=source,
        metadata=json.loads(metadata),
        reference_time=from_epoch(reference_time),
        ingested_at=from_epoch(ingested_at),
        extraction=state,
        extraction_error=error,
        job=job,
    )


def fact_from_row(row: tuple, provenance: list[dict[str, Any]]) -> Fact:
    """A fact of a row of `FACT_COLUMNS`, its epoch seconds made datetimes by `from_epoch`."""
    fields = dict(zip(FACT_FIELDS, row, strict=True))
    return Fact(**fields | {k: from_epoch(fields[k]) for k in _FACT_TIMES}, provenance=provenance)


def same_content(a: DocumentIn, b: DocumentIn) -> bool:
    """Whether two documents say the same (an id may come back, after a delete, with another
    document: work that read the first must not land on the second)."""
    fields = {"title", "text", "source", "metadata", "reference_time"}
    return a.model_dump(include=fields) == b.model_dump(include=fields)


def make_id() -> str:
    return uuid.uuid4().hex
