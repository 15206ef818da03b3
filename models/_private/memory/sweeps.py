"""The sweep of a `HybridMemory`: expiry, promotion by access, and consolidation of near
duplicates in the long-term tier (the policy is written down in `hybrid`; its decisions are in
`tiers`)."""

from __future__ import annotations

import numpy as np

from models._private.memory.persistence import upsert_entry
from models._private.memory.tiers import due_for_promotion, expired, merge_into, near_duplicates

__all__ = ["NEIGHBOURS", "SweepMixin"]

# Nearest records a new long-term record is compared with for consolidation: duplicates of it
# sit at the very top of a search by its own head vector.
NEIGHBOURS = 8


class SweepMixin:
    """The tier maintenance of `HybridMemory` (`hybrid`), which supplies its records,
    vectors, dense indexes and working sets, and the writes (`delete`, `_log`)."""

    def sweep(self) -> dict[str, int]:
        """Expires, promotes and consolidates; returns how many records each step touched.

        Not safe to run beside a search: `MemoryStore` runs it as a write.
        """
        gone = expired(self.records.values(), self.clock(), self.config.short_term_ttl_s)
        self.delete(gone)
        promoted = due_for_promotion(self.records.values(), self.config.promote_after_accesses)
        for r in promoted:
            self.working[r.namespace].pop(r.id, None)
            self._set_tier(r, "long_term")
            self._pending_access[r.id] = (r.access_count, r.tier)
        merged = self._consolidate()
        self._flush_access()
        return {"expired": len(gone), "promoted": len(promoted), "consolidated": merged}

    def _consolidate(self) -> int:
        # Only what changed since the last sweep is compared, each with its nearest long-term
        # neighbours, so a sweep costs a few searches per new record, not n² comparisons.
        fresh, self._unconsolidated = self._unconsolidated, set()
        merged = 0
        for ns in self.namespaces:
            new = [
                i for i in fresh if (r := self.records.get(i)) and r.namespace == ns and r.tier == "long_term"
            ]
            if not new:
                continue
            involved = set(new)
            for i in new:
                involved.update(self._near_duplicates_of(ns, self.vectors[i][0]))
            ids = sorted(involved, key=lambda i: (self.records[i].created_at, i))
            if len(ids) < 2:
                continue
            heads = np.stack([self.vectors[i][0] for i in ids])  # each text's head
            pairs = near_duplicates(heads, self.config.consolidate_cosine)
            for a, b in pairs:
                merge_into(self.records[ids[a]], self.records[ids[b]])
            if pairs:
                keepers = list(dict.fromkeys(ids[a] for a, _ in pairs))  # only they changed
                self._log(
                    upsert_entry([self.records[i] for i in keepers], [self.vectors[i] for i in keepers])
                )
                self.delete(sorted({ids[b] for _, b in pairs}))
                merged += len(pairs)
        return merged

    def _near_duplicates_of(self, ns: str, head: np.ndarray) -> set[str]:
        """Long-term records of `ns` whose head vector is within the consolidation cosine."""
        labels, _ = self.dense[ns].search(head, NEIGHBOURS * self._chunks_per_record())
        near = {self._by_label[int(lb)] for lb in labels}
        return {
            i
            for i in near
            if self.records[i].tier == "long_term"
            and float(self.vectors[i][0] @ head) >= self.config.consolidate_cosine
        }
