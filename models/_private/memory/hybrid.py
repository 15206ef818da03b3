"""HybridMemory: records in tiers and namespaces, searched densely (FAISS), lexically (BM25)
or both fused, and kept durable by a write-ahead log plus atomic snapshots.

Tier policy (the one place it is written down):
- `working`: a small per-namespace scratchpad, least-recently-used first out. A working record
  pushed out by `working_capacity` is demoted to `short_term`, not dropped.
- `short_term`: expires `short_term_ttl_s` after its last update (or after its own `ttl_s`).
- `long_term`: kept until deleted (or until its own `ttl_s`, when one is set).
- Promotion: a `working` or `short_term` record reaches `long_term` once it was returned by
  `promote_after_accesses` searches or `get`s, or when written with importance at least
  `promote_importance`.
- Consolidation: within one namespace's long-term tier, a record whose vector has cosine at
  least `consolidate_cosine` with an older one is merged into it (access counts summed,
  metadata merged, the newer text kept as `metadata.merged_texts`) and deleted. A sweep
  compares only the records that reached long-term or were rewritten since the last one, each
  with its nearest neighbours, and logs only the records a merge changed.
- `sweep()` runs expiry, promotion by access and consolidation; `MemoryStore` calls it
  periodically. (Promotion by importance happens on write.)
- Reads (`search`, `get`) only count accesses, so that they can run side by side; everything
  that changes records is a write.

This module is the facade; the parts live beside it:
- `schema`: `MemoryConfig`, `Record`, `Hit` and the tiers;
- `filters`: metadata filters for search;
- `tiers`: the decisions of the tier policy above (working LRU, expiry, promotion,
  consolidation);
- `sweeps`: `sweep()` (expiry, promotion by access, consolidation), a part of the class;
- `durability`: the log of every write, snapshots and restoring on open, a part of the class;
- `persistence`: the write-ahead log's entries and the snapshots (their layout is
  described there).

Long texts: a text longer than `chunk_tokens` is cut at sentence ends and each piece gets its
own vector (the embedder reads only its first 256 tokens); dense search scores a record by its
best chunk, and BM25 still sees the whole text.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Literal

import numpy as np

from models._private.core.errors import MemoryInputError
from models._private.core.journal import Journal, is_local
from models._private.core.private_files import private_dir
from models._private.memory.durability import DurabilityMixin
from models._private.memory.filters import compile_filter
from models._private.memory.persistence import delete_entry, local_copy, upsert_entry
from models._private.memory.schema import TIERS, Hit, MemoryConfig, Record
from models._private.memory.sweeps import SweepMixin
from models._private.memory.tiers import promote_on_write, touch_working
from models._private.retrieval.dense import DenseIndex
from models._private.retrieval.embedder import Embedder
from models._private.retrieval.fusion import fuse
from models._private.retrieval.lexical import LexicalIndex

# The schema names are re-exported: callers import them from here.
__all__ = ["TIERS", "Hit", "HybridMemory", "MemoryConfig", "Record"]


class HybridMemory(SweepMixin, DurabilityMixin):
    """Records in namespaces and tiers, with dense, lexical and hybrid search.

    Args:
        namespaces: The namespaces this memory holds (a swarm's name, `global`, ...); any other
            is refused.
        config: See `MemoryConfig`.
        embedder: A shared `Embedder`; built from `config.embedder` when None.
        clock: Seconds since the epoch (injectable for tests of expiry).
        system: The system (Ray namespace) it belongs to, a tag of its log's metrics.
    """

    def __init__(
        self,
        namespaces: Iterable[str],
        config: MemoryConfig | None = None,
        embedder: Embedder | None = None,
        clock: Callable[[], float] = time.time,
        system: str = "-",
    ):
        self.config = config or MemoryConfig()
        self.namespaces = list(dict.fromkeys(namespaces))
        if not self.namespaces:
            raise MemoryInputError("namespaces", "at least one namespace is needed")
        self.clock = clock
        self.system = system
        self.embedder = embedder or Embedder(self.config.embedder)
        self.dim = self.embedder.dim
        self.records: dict[str, Record] = {}
        self.vectors: dict[str, np.ndarray] = {}  # id -> (chunks, dim)
        self._label: dict[str, list[int]] = {}  # id -> one dense label per chunk
        self._by_label: dict[int, str] = {}
        self._labels = itertools.count(1)
        self.dense = {ns: DenseIndex(self.dim, self.config.dense_kind) for ns in self.namespaces}
        self.working: dict[str, OrderedDict[str, None]] = {ns: OrderedDict() for ns in self.namespaces}
        # A memory on an fsspec URI works in a local copy and keeps its log and snapshots there.
        self._remote = self.config.path if self.config.path and not is_local(self.config.path) else None
        self._root = local_copy(self._remote) if self._remote else self.config.path
        if self._root:  # tenant data: the owner's only, made so before the lexical index's folder
            private_dir(self._root)
        self._lexical_dir = os.path.join(self._root, "lexical-live") if self._root else None
        self.lexical = LexicalIndex(self._lexical_dir)
        self.wal: Journal | None = None
        self._pending_access: dict[str, tuple[int, str]] = {}
        self._unsynced: list[dict[str, Any]] = []  # log entries of `synced=False` writes
        # Long-term records not yet compared for consolidation: new, rewritten or just promoted.
        self._unconsolidated: set[str] = set()
        # Records deleted or replaced since the last snapshot (replays count too): what the log
        # holds that no live record needs, for an owner deciding when to compact it.
        self.superseded = 0
        if self.config.path:
            self._restore()

    # -- writes ---------------------------------------------------------------------------

    def upsert(
        self,
        records: Iterable[Record | dict],
        vectors: np.ndarray | None = None,
        *,
        embedded: list[np.ndarray] | None = None,
        synced: bool = True,
    ) -> list[str]:
        """Adds or replaces records; embeds their texts unless `vectors` or `embedded` are given.

        With `synced=False` the write is applied and its log entry queued but not yet stored:
        the caller awaits `sync_log()` before acknowledging it, so that writers arriving
        together share one fdatasync (the journal's group commit). Until then searches see it
        though a crash would lose it; no other write may log in between (see `sync_log`).

        Long texts are embedded chunk by chunk (see `MemoryConfig.chunk_tokens`); given
        `vectors`, one per record, are taken as they are; `embedded` is what `embed` returned
        for the records' texts (so that a caller can embed outside its own lock). All records
        are checked first; on any error nothing is written.

        Raises:
            MemoryInputError: empty or oversized text, unknown namespace, tier or field,
                wrong vector shape; the message names the record and field.
        """
        batch = [self._validate(r, i) for i, r in enumerate(records)]
        if not batch:
            return []
        if embedded is not None:
            if len(embedded) != len(batch) or any(v.ndim != 2 or v.shape[1] != self.dim for v in embedded):
                raise MemoryInputError(
                    "embedded", f"expected {len(batch)} arrays of shape (chunks, {self.dim})"
                )
            per_record = embedded
        elif vectors is None:
            per_record = self._embed([r.text for r in batch])
        else:
            vectors = np.asarray(vectors, dtype=np.float32)
            if vectors.shape != (len(batch), self.dim):
                raise MemoryInputError(
                    "vectors", f"expected shape ({len(batch)}, {self.dim}), got {vectors.shape}"
                )
            per_record = [vectors[j : j + 1] for j in range(len(batch))]
        now = self.clock()
        for r in batch:
            old = self.records.get(r.id)
            r.created_at = old.created_at if old else (r.created_at or now)
            r.updated_at = now
            promote_on_write(r, self.config.promote_importance)
        self._log(upsert_entry(batch, per_record), synced=synced)
        self._apply_upsert(batch, per_record)
        return [r.id for r in batch]

    def embed(self, texts: list[str]) -> list[np.ndarray]:
        """Each text's vectors, (chunks, dim), as `upsert` would make them; for `embedded`."""
        return self._embed(texts)

    def _embed(self, texts: list[str]) -> list[np.ndarray]:
        """Each text's vectors, (chunks, dim): one encode call for every chunk of the batch."""
        size = self.config.chunk_tokens
        pieces = [self.embedder.chunk(t, size) if size else [t] for t in texts]
        flat = self.embedder.encode([p for ps in pieces for p in ps])
        bounds = np.cumsum([0] + [len(ps) for ps in pieces])
        return [flat[a:b] for a, b in itertools.pairwise(bounds)]

    def _validate(self, raw: Record | dict, i: int) -> Record:
        try:
            r = raw.model_copy(deep=True) if isinstance(raw, Record) else Record.model_validate(raw)
        except Exception as e:
            raise MemoryInputError(f"records[{i}]", str(e).replace("\n", " ")) from None
        if not r.text.strip():
            raise MemoryInputError(f"records[{i}].text", "is empty")
        if len(r.text) > self.config.max_text_chars:
            raise MemoryInputError(
                f"records[{i}].text",
                f"has {len(r.text)} characters; max_text_chars is {self.config.max_text_chars}",
            )
        if r.namespace not in self.dense:
            raise MemoryInputError(
                f"records[{i}].namespace", f"unknown namespace {r.namespace!r}; known: {self.namespaces}"
            )
        return r

    def _apply_upsert(self, batch: list[Record], vectors: list[np.ndarray]) -> None:
        replaced = [r.id for r in batch if r.id in self.records]
        self.superseded += len(replaced)
        self._drop_vectors(replaced)  # chunk counts may change
        for r in batch:
            if (old := self.records.get(r.id)) is not None and old.namespace != r.namespace:
                self.working[old.namespace].pop(r.id, None)  # moved: out of the old namespace's LRU
        labels: dict[str, list[int]] = {}
        chunks: dict[str, list[np.ndarray]] = {}
        for r, vecs in zip(batch, vectors, strict=True):
            ids = [next(self._labels) for _ in range(len(vecs))]
            self._label[r.id] = ids
            self._by_label.update(dict.fromkeys(ids, r.id))
            self.records[r.id], self.vectors[r.id] = r, vecs
            if r.tier == "long_term":
                self._unconsolidated.add(r.id)
            labels.setdefault(r.namespace, []).extend(ids)
            chunks.setdefault(r.namespace, []).append(vecs)
            self._touch_working(r)
        for ns, ids in labels.items():
            self.dense[ns].upsert(np.array(ids), np.concatenate(chunks[ns]))
        self.lexical.upsert((r.id, r.namespace, r.tier, r.text) for r in batch)

    def _drop_vectors(self, ids: list[str]) -> None:
        by_ns: dict[str, list[int]] = {}
        for i in ids:
            labels = self._label.pop(i, [])
            for lb in labels:
                self._by_label.pop(lb, None)
            by_ns.setdefault(self.records[i].namespace, []).extend(labels)
            self.vectors.pop(i, None)
        for ns, labels in by_ns.items():
            self.dense[ns].remove(labels)

    def _touch_working(self, r: Record) -> None:
        for evicted in touch_working(self.working[r.namespace], r, self.config.working_capacity):
            self._set_tier(self.records[evicted], "short_term")

    def _set_tier(self, r: Record, tier: str) -> None:
        r.tier = tier
        if tier == "long_term":
            self._unconsolidated.add(r.id)
        self.lexical.upsert([(r.id, r.namespace, r.tier, r.text)])

    def delete(self, ids: Iterable[str]) -> int:
        """Deletes records by id; returns how many existed. Deleted records never come back."""
        present = [i for i in dict.fromkeys(ids) if i in self.records]
        if present:
            self._log(delete_entry(present))
            self._apply_delete(present)
        return len(present)

    def _apply_delete(self, ids: list[str]) -> None:
        ids = [i for i in ids if i in self.records]
        self.superseded += len(ids)
        self._drop_vectors(ids)
        for i in ids:
            r = self.records.pop(i)
            self.working[r.namespace].pop(i, None)
            self._unconsolidated.discard(i)
        self.lexical.delete(ids)
        if self.lexical.stale:
            self.lexical.rebuild(self._lexical_docs())

    def _lexical_docs(self) -> Iterable[tuple[str, str, str, str]]:
        return ((r.id, r.namespace, r.tier, r.text) for r in self.records.values())

    # -- reads ----------------------------------------------------------------------------

    def get(self, ids: Iterable[str]) -> list[Record]:
        """The records with these ids that exist (counts as an access)."""
        found = [self.records[i] for i in ids if i in self.records]
        self._accessed(found)
        return [r.model_copy() for r in found]

    def search(
        self,
        query: str | None = None,
        k: int = 10,
        *,
        namespaces: list[str] | None = None,
        filter: dict[str, Any] | None = None,
        tiers: list[str] | None = None,
        mode: Literal["dense", "lexical", "hybrid"] = "hybrid",
        vector: np.ndarray | None = None,
    ) -> list[Hit]:
        """The k best records for `query` (or a query `vector` for dense search).

        Raises:
            MemoryInputError: unknown namespace, tier or mode; malformed filter; no query.
        """
        namespaces = self._check_namespaces(namespaces)
        if tiers is not None and (bad := [t for t in tiers if t not in TIERS]):
            raise MemoryInputError("tiers", f"unknown tier(s) {bad}; tiers are {list(TIERS)}")
        if mode not in ("dense", "lexical", "hybrid"):
            raise MemoryInputError("mode", f"must be dense, lexical or hybrid, got {mode!r}")
        if k <= 0:
            raise MemoryInputError("k", f"must be positive, got {k}")
        keep = compile_filter(filter)
        if mode != "dense" and not (query and query.strip()):
            raise MemoryInputError("query", f"{mode} search needs query text")
        if mode != "lexical" and vector is None and not (query and query.strip()):
            raise MemoryInputError("query", "dense search needs query text or a vector")

        def ok(rid: str) -> bool:
            r = self.records.get(rid)
            return r is not None and (tiers is None or r.tier in tiers) and keep(r.metadata)

        # Over-fetch when filtering after the index, so that k survive the filter.
        n = max(self.config.candidates, k) * (4 if (filter or tiers) else 1)
        results: dict[str, list[tuple[str, float]]] = {}
        if mode != "lexical":
            q = vector if vector is not None else self.embedder.encode([query])[0]
            q = np.asarray(q, dtype=np.float32).reshape(-1)
            if q.shape != (self.dim,):
                raise MemoryInputError("vector", f"expected {self.dim} dimensions, got {q.shape[0]}")
            best: dict[str, float] = {}
            fetch, by_label = self._chunks_per_record(), self._by_label
            for ns in namespaces:
                # Over-fetch chunks so that n distinct records remain after keeping each one's best.
                labels, scores = self.dense[ns].search(q, n * fetch)
                taken = 0
                for lb, sc in zip(labels.tolist(), scores.tolist(), strict=True):  # Python numbers: faster
                    rid = by_label[lb]
                    if rid not in best and ok(rid):  # chunks come best first
                        best[rid] = sc
                        taken += 1
                        if taken == n:  # the rest score no higher: they would not be kept
                            break
            results["dense"] = sorted(best.items(), key=lambda h: -h[1])[:n]
        if mode != "dense":
            hits = self.lexical.search(query, n, namespaces=namespaces, tiers=tiers)
            results["lexical"] = [h for h in hits if ok(h[0])]
        fused = fuse(
            results,
            self.config.fusion if mode == "hybrid" else "weighted",
            {"dense": self.config.dense_weight, "lexical": 1 - self.config.dense_weight}
            if mode == "hybrid"
            else None,
            self.config.rrf_k,
        )[:k]
        found = [self.records[h.id] for h in fused]
        self._accessed(found)
        # Built without validation: every field is already of its type (a search of 50 hits
        # spent 0.4 ms validating them).
        return [
            Hit.model_construct(record=r.model_copy(), score=h.score, ranks=h.ranks, scores=h.scores)
            for r, h in zip(found, fused, strict=True)
        ]

    def _chunks_per_record(self) -> int:
        # Twice the mean chunk count: enough, in practice, for n distinct records to remain.
        chunks = sum(len(d) for d in self.dense.values())
        return max(1, 2 * -(-chunks // max(1, len(self.records))))

    def _check_namespaces(self, namespaces: list[str] | None) -> list[str]:
        if namespaces is None:
            return self.namespaces
        if bad := [ns for ns in namespaces if ns not in self.dense]:
            raise MemoryInputError("namespaces", f"unknown namespace(s) {bad}; known: {self.namespaces}")
        return list(namespaces)

    def _accessed(self, records: list[Record]) -> None:
        # Reads only count; the promotion they earn is a write, applied by the next `sweep`
        # (so that searches can run side by side while writes are serialised).
        for r in records:
            r.access_count += 1
            if r.id in self.working[r.namespace]:
                self.working[r.namespace].move_to_end(r.id)  # one C-level step: safe beside other reads
        # Access counts ride along with the next logged write; they need no sync of their own.
        self._pending_access.update({r.id: (r.access_count, r.tier) for r in records})

    def close(self) -> None:
        """Flushes access counts and releases files."""
        self._flush_access()
        if self.wal is not None:
            self.wal.close()
        self.lexical.close()
