"""The tier policy of `HybridMemory`, as decisions: which records a write promotes, the working
LRU pushes out, expiry removes, access promotes and consolidation merges. `HybridMemory` carries
them out (logs them, updates its indexes); nothing here touches an index or the log.

The policy itself is written down once, at the top of `hybrid.py` (the README points there).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import faiss
import numpy as np

from models._private.memory.schema import Record

__all__ = [
    "due_for_promotion",
    "expired",
    "merge_into",
    "near_duplicates",
    "promote_on_write",
    "touch_working",
]


def promote_on_write(record: Record, promote_importance: float) -> None:
    """Moves a record written with importance at least `promote_importance` to `long_term`."""
    if record.tier != "long_term" and record.importance >= promote_importance:
        record.tier = "long_term"


def touch_working(lru: OrderedDict[str, None], record: Record, capacity: int) -> list[str]:
    """Makes `record` the most recently used of its namespace's working LRU `lru` if it is a
    working record, or takes it out of the LRU if not; returns the ids pushed out past
    `capacity`, oldest first, for the caller to demote to `short_term`."""
    lru.pop(record.id, None)
    if record.tier != "working":
        return []
    lru[record.id] = None
    evicted = []
    while len(lru) > capacity:
        evicted.append(lru.popitem(last=False)[0])
    return evicted


def expired(records: Iterable[Record], now: float, short_term_ttl_s: float) -> list[str]:
    """The ids of records whose own `ttl_s`, or a short-term record's `short_term_ttl_s`, has
    passed since their last update."""
    gone = []
    for r in records:
        ttl = r.ttl_s or (short_term_ttl_s if r.tier == "short_term" else None)
        if ttl is not None and now - r.updated_at > ttl:
            gone.append(r.id)
    return gone


def due_for_promotion(records: Iterable[Record], promote_after_accesses: int) -> list[Record]:
    """The records below `long_term` that were accessed at least `promote_after_accesses` times."""
    return [r for r in records if r.tier != "long_term" and r.access_count >= promote_after_accesses]


def near_duplicates(heads: np.ndarray, min_cosine: float) -> list[tuple[int, int]]:
    """(keep, duplicate) row pairs among `heads`, one unit vector per record, oldest first.

    A row is a duplicate of the oldest earlier row, not itself merged away, whose cosine with it
    is at least `min_cosine`. Apply the pairs in order with `merge_into`.
    """
    index = faiss.IndexFlatIP(heads.shape[1])
    index.add(heads)
    lims, _, labels = index.range_search(heads, min_cosine)
    pairs: list[tuple[int, int]] = []
    gone: set[int] = set()
    for a in range(len(heads)):
        if a in gone:
            continue
        for j in range(lims[a], lims[a + 1]):
            b = int(labels[j])
            if b > a and b not in gone:
                pairs.append((a, b))
                gone.add(b)
    return pairs


def merge_into(keep: Record, dup: Record) -> None:
    """Folds `dup` into `keep`: access counts summed, the higher importance, metadata merged
    (`keep`'s values win), and `dup`'s text appended to `keep.metadata["merged_texts"]`."""
    keep.access_count += dup.access_count
    keep.importance = max(keep.importance, dup.importance)
    merged_texts = keep.metadata.get("merged_texts")
    keep.metadata = {**dup.metadata, **keep.metadata}
    if dup.text != keep.text:
        keep.metadata["merged_texts"] = (f"{merged_texts}\n" if merged_texts else "") + dup.text
