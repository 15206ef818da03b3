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
  metadata merged, the newer text kept as `metadata.merged_texts`) and deleted.
- `sweep()` runs expiry, promotion by access and consolidation; `MemoryStore` calls it
  periodically. (Promotion by importance happens on write.)
- Reads (`search`, `get`) only count accesses, so that they can run side by side; everything
  that changes records is a write.

Long texts: a text longer than `chunk_tokens` is cut at sentence ends and each piece gets its
own vector (the embedder reads only its first 256 tokens); dense search scores a record by its
best chunk, and BM25 still sees the whole text.

Durability: every write is appended to a checksummed write-ahead log (the journal of the
swarm runtime) and fdatasync'ed before it returns. `snapshot()` writes the records (JSON
lines), the vectors (`.npy`, no pickle), the FAISS indexes (`faiss.write_index`) and the
tantivy index into a new directory, switches a `CURRENT` pointer with an atomic rename, and
then empties the log. Opening a memory loads the current snapshot and replays the log.
Nothing stored is pickled.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt

from models._private.core.config import ConfigModel
from models._private.core.errors import MemoryInputError
from models._private.core.files import atomic_write, fsync_tree
from models._private.core.journal import Journal
from models._private.dense import DenseIndex
from models._private.embedder import Embedder, EmbedderConfig
from models._private.fusion import fuse
from models._private.lexical import LexicalIndex

__all__ = ["TIERS", "Hit", "HybridMemory", "MemoryConfig", "Record"]

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
    path: str | None = Field(None, description="Directory for the log and snapshots; None keeps nothing.")
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


_OPS = {"$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte"}


def _compile_filter(spec: dict[str, Any] | None) -> Callable[[dict[str, Scalar]], bool]:
    """A predicate over metadata from {"field": value | {"$op": operand}}; raises on bad specs."""
    if spec is None:
        return lambda _m: True
    if not isinstance(spec, dict):
        raise MemoryInputError(
            "filter", f"must be a mapping of field to condition, got {type(spec).__name__}"
        )
    checks: list[Callable[[dict[str, Scalar]], bool]] = []
    for key, cond in spec.items():
        conds = cond if isinstance(cond, dict) else {"$eq": cond}
        for op, arg in conds.items():
            if op not in _OPS:
                raise MemoryInputError(f"filter.{key}", f"unknown operator {op!r}; use one of {sorted(_OPS)}")
            if op in ("$in", "$nin") and not isinstance(arg, list):
                raise MemoryInputError(f"filter.{key}.{op}", "needs a list")
            if op in ("$gt", "$gte", "$lt", "$lte") and not isinstance(arg, (int, float)):
                raise MemoryInputError(f"filter.{key}.{op}", f"needs a number, got {arg!r}")
            checks.append(_check(key, op, arg))
    return lambda m: all(c(m) for c in checks)


def _check(key: str, op: str, arg: Any) -> Callable[[dict[str, Scalar]], bool]:
    def num(m: dict[str, Scalar]) -> float | None:
        v = m.get(key)
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    return {
        "$eq": lambda m: m.get(key) == arg,
        "$ne": lambda m: m.get(key) != arg,
        "$in": lambda m: m.get(key) in arg,
        "$nin": lambda m: m.get(key) not in arg,
        "$gt": lambda m: (v := num(m)) is not None and v > arg,
        "$gte": lambda m: (v := num(m)) is not None and v >= arg,
        "$lt": lambda m: (v := num(m)) is not None and v < arg,
        "$lte": lambda m: (v := num(m)) is not None and v <= arg,
    }[op]


def _b64(vec: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vec, dtype=np.float32).tobytes()).decode()


def _unb64(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float32)


class HybridMemory:
    """Records in namespaces and tiers, with dense, lexical and hybrid search.

    Args:
        namespaces: The namespaces this memory holds (a swarm's name, `global`, ...); any other
            is refused.
        config: See `MemoryConfig`.
        embedder: A shared `Embedder`; built from `config.embedder` when None.
        clock: Seconds since the epoch (injectable for tests of expiry).
    """

    def __init__(
        self,
        namespaces: Iterable[str],
        config: MemoryConfig | None = None,
        embedder: Embedder | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.config = config or MemoryConfig()
        self.namespaces = list(dict.fromkeys(namespaces))
        if not self.namespaces:
            raise MemoryInputError("namespaces", "at least one namespace is needed")
        self.clock = clock
        self.embedder = embedder or Embedder(self.config.embedder)
        self.dim = self.embedder.dim
        self.records: dict[str, Record] = {}
        self.vectors: dict[str, np.ndarray] = {}  # id -> (chunks, dim)
        self._label: dict[str, list[int]] = {}  # id -> one dense label per chunk
        self._by_label: dict[int, str] = {}
        self._labels = itertools.count(1)
        self.dense = {ns: DenseIndex(self.dim, self.config.dense_kind) for ns in self.namespaces}
        self.working: dict[str, OrderedDict[str, None]] = {ns: OrderedDict() for ns in self.namespaces}
        self._lexical_dir = os.path.join(self.config.path, "lexical-live") if self.config.path else None
        self.lexical = LexicalIndex(self._lexical_dir)
        self.wal: Journal | None = None
        self._pending_access: dict[str, tuple[int, str]] = {}
        if self.config.path:
            self._restore()

    # -- writes ---------------------------------------------------------------------------

    def upsert(self, records: Iterable[Record | dict], vectors: np.ndarray | None = None) -> list[str]:
        """Adds or replaces records; embeds their texts unless `vectors` are given.

        Long texts are embedded chunk by chunk (see `MemoryConfig.chunk_tokens`); given
        `vectors`, one per record, are taken as they are. All records are checked first; on
        any error nothing is written.

        Raises:
            MemoryInputError: empty or oversized text, unknown namespace, tier or field,
                wrong vector shape; the message names the record and field.
        """
        batch = [self._validate(r, i) for i, r in enumerate(records)]
        if not batch:
            return []
        if vectors is None:
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
            if r.tier != "long_term" and r.importance >= self.config.promote_importance:
                r.tier = "long_term"
        self._log(
            {
                "op": "upsert",
                "records": [r.model_dump() for r in batch],
                "vectors": [_b64(v) for v in per_record],
            }
        )
        self._apply_upsert(batch, per_record)
        return [r.id for r in batch]

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
        self._drop_vectors([r.id for r in batch if r.id in self.records])  # chunk counts may change
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
        lru = self.working[r.namespace]
        lru.pop(r.id, None)
        if r.tier != "working":
            return
        lru[r.id] = None
        while len(lru) > self.config.working_capacity:
            evicted, _ = lru.popitem(last=False)
            self._set_tier(self.records[evicted], "short_term")

    def _set_tier(self, r: Record, tier: str) -> None:
        r.tier = tier
        self.lexical.upsert([(r.id, r.namespace, r.tier, r.text)])

    def delete(self, ids: Iterable[str]) -> int:
        """Deletes records by id; returns how many existed. Deleted records never come back."""
        present = [i for i in dict.fromkeys(ids) if i in self.records]
        if present:
            self._log({"op": "delete", "ids": present})
            self._apply_delete(present)
        return len(present)

    def _apply_delete(self, ids: list[str]) -> None:
        ids = [i for i in ids if i in self.records]
        self._drop_vectors(ids)
        for i in ids:
            r = self.records.pop(i)
            self.working[r.namespace].pop(i, None)
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
        keep = _compile_filter(filter)
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
            fetch = self._chunks_per_record()
            for ns in namespaces:
                # Over-fetch chunks so that n distinct records remain after keeping each one's best.
                labels, scores = self.dense[ns].search(q, n * fetch)
                for lb, sc in zip(labels, scores, strict=True):
                    rid = self._by_label[int(lb)]
                    if rid not in best and ok(rid):  # chunks come best first
                        best[rid] = float(sc)
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
        return [
            Hit(record=r.model_copy(), score=h.score, ranks=h.ranks, scores=h.scores)
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

    # -- tier maintenance ---------------------------------------------------------------------

    def sweep(self) -> dict[str, int]:
        """Expires, promotes and consolidates; returns how many records each step touched.

        Not safe to run beside a search: `MemoryStore` runs it as a write.
        """
        now = self.clock()
        expired = []
        for r in self.records.values():
            ttl = r.ttl_s or (self.config.short_term_ttl_s if r.tier == "short_term" else None)
            if ttl is not None and now - r.updated_at > ttl:
                expired.append(r.id)
        self.delete(expired)
        promoted = [
            r
            for r in self.records.values()
            if r.tier != "long_term" and r.access_count >= self.config.promote_after_accesses
        ]
        for r in promoted:
            self.working[r.namespace].pop(r.id, None)
            self._set_tier(r, "long_term")
            self._pending_access[r.id] = (r.access_count, r.tier)
        merged = self._consolidate()
        self._flush_access()
        return {"expired": len(expired), "promoted": len(promoted), "consolidated": merged}

    def _consolidate(self) -> int:
        merged = 0
        for ns in self.namespaces:
            ids = sorted(
                (r.id for r in self.records.values() if r.namespace == ns and r.tier == "long_term"),
                key=lambda i: (self.records[i].created_at, i),
            )
            if len(ids) < 2:
                continue
            mat = np.stack([self.vectors[i][0] for i in ids])  # each text's head
            index = faiss.IndexFlatIP(self.dim)
            index.add(mat)
            lims, _, labels = index.range_search(mat, self.config.consolidate_cosine)
            gone: set[str] = set()
            for a, keep_id in enumerate(ids):
                if keep_id in gone:
                    continue
                for j in range(lims[a], lims[a + 1]):
                    b = int(labels[j])
                    if b > a and ids[b] not in gone:
                        self._merge(self.records[keep_id], self.records[ids[b]])
                        gone.add(ids[b])
            if gone:
                survivors = {i for i in ids if i not in gone}
                self._log(
                    {
                        "op": "upsert",
                        "records": [self.records[i].model_dump() for i in survivors],
                        "vectors": [_b64(self.vectors[i]) for i in survivors],
                    }
                )
                self.delete(sorted(gone))
                merged += len(gone)
        return merged

    @staticmethod
    def _merge(keep: Record, dup: Record) -> None:
        keep.access_count += dup.access_count
        keep.importance = max(keep.importance, dup.importance)
        merged_texts = keep.metadata.get("merged_texts")
        keep.metadata = {**dup.metadata, **keep.metadata}
        if dup.text != keep.text:
            keep.metadata["merged_texts"] = (f"{merged_texts}\n" if merged_texts else "") + dup.text

    # -- persistence ------------------------------------------------------------------------

    def _log(self, entry: dict[str, Any]) -> None:
        if self.wal is not None:
            entries = [entry]
            if self._pending_access:
                entries.insert(0, {"op": "access", "counts": self._pending_access})
                self._pending_access = {}
            self.wal.write_now(*entries)

    def _flush_access(self) -> None:
        if self.wal is not None and self._pending_access:
            self.wal.write_now({"op": "access", "counts": self._pending_access})
            self._pending_access = {}

    def snapshot(self) -> str:
        """Writes a snapshot atomically and empties the log; returns the snapshot directory."""
        if not self.config.path:
            raise MemoryInputError("path", "this memory has no path to snapshot to")
        self._flush_access()
        if self.lexical.stale:
            self.lexical.rebuild(self._lexical_docs())
        root = self.config.path
        taken = [
            int(n.split("-")[1]) for n in os.listdir(root) if n.startswith("snapshot-") and n[9:].isdigit()
        ]
        final = os.path.join(root, f"snapshot-{max(taken, default=0) + 1:06d}")
        tmp = final + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        ids = list(self.records)
        with open(os.path.join(tmp, "records.jsonl"), "w") as f:
            for i in ids:
                f.write(json.dumps(self.records[i].model_dump()) + "\n")
        np.save(
            os.path.join(tmp, "vectors.npy"),
            np.concatenate([self.vectors[i] for i in ids]) if ids else np.zeros((0, self.dim), np.float32),
            allow_pickle=False,
        )
        with open(os.path.join(tmp, "labels.json"), "w") as f:
            json.dump({i: self._label[i] for i in ids}, f)
        for ns, index in self.dense.items():
            if index.kind == "hnsw":
                if index._dead:
                    index._rebuild()  # so that graph positions are exactly the live chunks
                faiss.write_index(index._index, os.path.join(tmp, f"dense-{ns}.faiss"))
                np.save(os.path.join(tmp, f"dense-{ns}.labels.npy"), index._ids, allow_pickle=False)
        shutil.copytree(self._lexical_dir, os.path.join(tmp, "lexical"))
        fsync_tree(tmp)
        os.replace(tmp, final)
        atomic_write(os.path.join(root, "CURRENT"), os.path.basename(final))
        self.wal.reset()  # everything in it is in the snapshot now
        for name in os.listdir(root):
            if name.startswith("snapshot-") and name != os.path.basename(final):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        return final

    def _restore(self) -> None:
        root = self.config.path
        os.makedirs(root, exist_ok=True)
        current = os.path.join(root, "CURRENT")
        if os.path.exists(current):
            snap = os.path.join(root, Path(current).read_text().strip())
            lines = Path(snap, "records.jsonl").read_text().splitlines()
            records = [Record.model_validate_json(line) for line in lines]
            vectors = np.load(os.path.join(snap, "vectors.npy"), allow_pickle=False)
            labels = json.loads(Path(snap, "labels.json").read_text())  # id -> chunk labels
            for r in records:
                self._label[r.id] = labels[r.id]
                self._by_label.update(dict.fromkeys(labels[r.id], r.id))
            self._labels = itertools.count(max((max(v) for v in labels.values()), default=0) + 1)
            bounds = np.cumsum([0] + [len(labels[r.id]) for r in records])
            self.lexical.close()
            shutil.rmtree(self._lexical_dir, ignore_errors=True)
            shutil.copytree(os.path.join(snap, "lexical"), self._lexical_dir)
            self.lexical = LexicalIndex(self._lexical_dir)
            for j, r in enumerate(records):
                self.records[r.id], self.vectors[r.id] = r, vectors[bounds[j] : bounds[j + 1]]
                self._touch_working(r)
            for ns in self.namespaces:
                mine = [r for r in records if r.namespace == ns]
                if not mine:
                    continue
                ids = np.array([lb for r in mine for lb in self._label[r.id]], dtype=np.int64)
                vecs = np.concatenate([self.vectors[r.id] for r in mine])
                path = os.path.join(snap, f"dense-{ns}.faiss")
                if self.dense[ns].kind == "hnsw" and os.path.exists(path):
                    # The graph's positions hold the labels saved beside it, in that order.
                    order = np.load(os.path.join(snap, f"dense-{ns}.labels.npy"), allow_pickle=False)
                    row = {int(lb): p for p, lb in enumerate(ids)}
                    self.dense[ns]._index = faiss.read_index(path)
                    self.dense[ns]._ids, self.dense[ns]._vecs = order, vecs[[row[int(lb)] for lb in order]]
                    self.dense[ns]._pos = {int(lb): p for p, lb in enumerate(order)}
                else:
                    self.dense[ns].upsert(ids, vecs)
        elif self.lexical.num_docs:  # a lexical index with no snapshot: start it afresh
            self.lexical.rebuild([])
        self.wal = Journal(os.path.join(root, "wal"), sync=self.config.sync)
        for entry in self.wal.read():
            if entry["op"] == "upsert":
                batch = [Record.model_validate(r) for r in entry["records"]]
                vecs = [_unb64(v).reshape(-1, self.dim) for v in entry["vectors"]]
                known = [j for j, r in enumerate(batch) if r.namespace in self.dense]
                self._apply_upsert([batch[j] for j in known], [vecs[j] for j in known])
            elif entry["op"] == "delete":
                self._apply_delete([i for i in entry["ids"] if i in self.records])
            elif entry["op"] == "access":
                for i, (count, tier) in entry["counts"].items():
                    if i in self.records:
                        self.records[i].access_count = count
                        if self.records[i].tier != tier:
                            self._set_tier(self.records[i], tier)

    def close(self) -> None:
        """Flushes access counts and releases files."""
        self._flush_access()
        if self.wal is not None:
            self.wal.close()
        self.lexical.close()
