"""Fusing ranked lists from several indexes: reciprocal rank fusion and normalised scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Fused", "fuse"]

Method = Literal["rrf", "weighted"]


@dataclass
class Fused:
    """One fused hit: its score and, per index, the rank (1-based) and raw score it had there."""

    id: str
    score: float
    ranks: dict[str, int] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)


def _minmax(hits: list[tuple[str, float]]) -> dict[str, float]:
    if not hits:
        return {}
    lo, hi = min(s for _, s in hits), max(s for _, s in hits)
    span = hi - lo
    return {i: (s - lo) / span if span > 0 else 1.0 for i, s in hits}


def fuse(
    results: dict[str, list[tuple[str, float]]],
    method: Method = "weighted",
    weights: dict[str, float] | None = None,
    rrf_k: int = 60,
) -> list[Fused]:
    """Fuses best-first (id, score) lists keyed by index name into one best-first list.

    `rrf`: sum of weight / (rrf_k + rank) (Cormack et al., 2009), blind to score scales.
    `weighted`: sum of weight * min-max normalised score; an id missing from a list gets 0 there.
    """
    weights = weights or {}
    fused: dict[str, Fused] = {}
    for name, hits in results.items():
        w = weights.get(name, 1.0)
        norm = _minmax(hits) if method == "weighted" else {}
        for rank, (doc_id, score) in enumerate(hits, start=1):
            hit = fused.setdefault(doc_id, Fused(doc_id, 0.0))
            hit.ranks[name], hit.scores[name] = rank, score
            hit.score += w / (rrf_k + rank) if method == "rrf" else w * norm[doc_id]
    return sorted(fused.values(), key=lambda h: (-h.score, h.id))
