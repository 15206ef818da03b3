"""What a memory holds and is configured by: `MemoryConfig`, `Record`, `Hit` and the tiers.

`Record` is also the on-disk shape: snapshots store `Record.model_dump()` as JSON lines and the
write-ahead log carries the same dicts, so its fields are part of the persisted format.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt

from models._private.core.config import ConfigModel
from models._private.retrieval.embedder import EmbedderConfig

__all__ = ["TIERS", "Hit", "MemoryConfig", "Record", "Scalar", "Tier"]

Tier = Literal["working", "short_term", "long_term"]
TIERS: tuple[str, ...] = ("working", "short_term", "long_term")
Scalar = str | int | float | bool | None


class MemoryConfig(ConfigModel):
    """One memory: embedder, index kind, fusion, tier policy, limits and persistence."""

    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig, description="Text embedder.")
    dense_kind: Literal["flat", "hnsw", "ivf"] = Field("flat", description="FAISS index kind.")
    fusion: Literal["weighted", "rrf"] = Field("weighted", description="How hybrid search fuses.")
    dense_weight: float = Field(
        0.5, ge=0, le=1, description="Dense share in weighted fusion (lexical: the rest)."
    )
    rrf_k: PositiveInt = Field(60, description="RRF constant.")
    candidates: PositiveInt = Field(100, description="Hits taken from each index before fusion.")
    working_capacity: PositiveInt = Field(256, description="Working-tier records per namespace (LRU).")
    short_term_ttl_s: PositiveFloat = Field(3600.0, description="Lifetime of a short-term record.")
    promote_after_accesses: PositiveInt = Field(3, description="Accesses that promote to long-term.")
    promote_importance: float = Field(0.8, ge=0, le=1, description="Importance that promotes at once.")
    consolidate_cosine: float = Field(0.97, gt=0, le=1, description="Near-duplicate threshold.")
    max_text_chars: PositiveInt = Field(20_000, description="Longest text accepted.")
    chunk_tokens: PositiveInt | None = Field(
        200,
        description="A text longer than this many tokens gets one vector per sentence-aligned "
        "chunk, and its dense score is its best chunk's; None embeds the whole text once (the "
        "embedder reads only its first 256 tokens).",
    )
    path: str | None = Field(
        None,
        description="Directory, or fsspec URI (s3://…, with the s3 extra), of the log and snapshots; "
        "a URI is worked on in a local copy and any node can open it. None keeps nothing.",
    )
    sync: bool = Field(True, description="fdatasync each logged write.")


class Record(BaseModel):
    """A memory record. Write with id, namespace, text and optionally the rest."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=256)
    namespace: str
    text: str
    metadata: dict[str, Scalar] = Field(default_factory=dict, description="Filterable fields.")
    tier: Tier = "long_term"
    importance: float = Field(0.5, ge=0, le=1)
    ttl_s: PositiveFloat | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    access_count: NonNegativeInt = 0


class Hit(BaseModel):
    """A search result: the record, its score, and the rank/score each index gave it."""

    record: Record
    score: float
    ranks: dict[str, int]
    scores: dict[str, float]
