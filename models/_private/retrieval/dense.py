"""Dense index on FAISS: exact inner product by default, HNSW or IVF for large collections.

Deletes really delete. `flat` and `ivf` remove vectors with `remove_ids`. HNSW graphs cannot
remove nodes (faiss#3339), so an `hnsw` index keeps deleted positions in a tombstone set that
every search excludes through an `IDSelector` (so top-k is exact over the live vectors, not a
post-filter that can come back short), and rebuilds the graph from the live vectors once a
fifth of it is tombstones. The trade-off: deleted vectors cost memory until that rebuild, and a
rebuild costs one pass of inserts; `flat` pays neither but searches in O(n).

Beside FAISS the index keeps each row's id and vector (for snapshots and HNSW rebuilds) in
buffers that grow by doubling, so adding m vectors costs O(m) amortised, not a copy of all n.
Rows of removed vectors are dropped from them once a fifth are dead (for every kind), so an
id updated again and again holds one row, not one per update.

Saving (`save`/`load`): the caller keeps the vectors (the memory's own `vectors.npy`), so only
what cannot be had back cheaply is written: an HNSW graph, as `dense-{name}.faiss` plus the
ids its positions hold, `dense-{name}.labels.npy`. A `flat` or `ivf` index writes nothing and
is rebuilt from the vectors on load (exact search gives the same answers; IVF retrains on them).
"""

from __future__ import annotations

import os
from typing import Any, Literal

import faiss
import numpy as np

__all__ = ["DenseIndex"]

Kind = Literal["flat", "hnsw", "ivf"]


class DenseIndex:
    """Vectors keyed by int64 ids, searched by inner product (cosine on unit vectors)."""

    def __init__(
        self,
        dim: int,
        kind: Kind = "flat",
        hnsw_m: int = 32,
        ef_search: int = 128,
        ivf_lists: int = 1024,
        ivf_probe: int = 32,
        rebuild_ratio: float = 0.2,
    ):
        self.dim, self.kind = dim, kind
        self.hnsw_m, self.ef_search = hnsw_m, ef_search
        self.ivf_lists, self.ivf_probe = ivf_lists, ivf_probe
        self.rebuild_ratio = rebuild_ratio
        # Rows 0.._n-1 of the buffers hold every vector added since the last compaction (HNSW
        # adds by position, so for it a row is also its FAISS label); capacity doubles.
        self._ids = np.zeros(0, dtype=np.int64)
        self._vecs = np.zeros((0, dim), dtype=np.float32)
        self._n = 0
        self._pos: dict[int, int] = {}  # id -> live row
        self._dead: set[int] = set()  # rows of removed vectors, until compaction
        self._index = self._new()

    def _new(self) -> faiss.Index:
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = self.ef_search
            return index
        if self.kind == "ivf":
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, self.ivf_lists, faiss.METRIC_INNER_PRODUCT)
            index.nprobe = self.ivf_probe
            self._quantizer = quantizer  # the IVF index does not own it
            # IVF keeps ids itself; wrapped in an IDMap its remove_ids would mis-map ids, since
            # IDMap assumes the inner index renumbers after a removal and IVF does not.
            return index
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def __len__(self) -> int:
        return len(self._pos)

    @property
    def stored_rows(self) -> int:
        """Rows held beside FAISS, dead ones not yet compacted away included."""
        return self._n

    def _check(self, vecs: np.ndarray) -> np.ndarray:
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape (n, {self.dim}), got {vecs.shape}")
        return vecs

    def upsert(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Adds vectors; an id already present is replaced."""
        ids = np.asarray(ids, dtype=np.int64)
        vecs = self._check(vecs)
        if len(ids) != len(vecs):
            raise ValueError(f"{len(ids)} ids for {len(vecs)} vectors")
        self.remove([int(i) for i in ids if int(i) in self._pos])
        if self.kind == "ivf" and not self._index.is_trained:
            self._train(vecs)
        start = self._append(ids, vecs)
        for offset, i in enumerate(ids):
            self._pos[int(i)] = start + offset
        if self.kind == "hnsw":
            self._index.add(vecs)
        else:
            self._index.add_with_ids(vecs, ids)

    def _append(self, ids: np.ndarray, vecs: np.ndarray) -> int:
        """Writes rows after the last one, growing the buffers by doubling; returns the first."""
        start, end = self._n, self._n + len(ids)
        if end > len(self._ids):
            capacity = max(end, 2 * len(self._ids), 64)
            grown_ids = np.zeros(capacity, dtype=np.int64)
            grown_vecs = np.zeros((capacity, self.dim), dtype=np.float32)
            grown_ids[:start], grown_vecs[:start] = self._ids[:start], self._vecs[:start]
            self._ids, self._vecs = grown_ids, grown_vecs
        self._ids[start:end], self._vecs[start:end] = ids, vecs
        self._n = end
        return start

    def _train(self, vecs: np.ndarray) -> None:
        # IVF needs training data; with too few vectors for its lists it trains on what it has
        # with fewer lists.
        if len(vecs) < self._index.nlist:
            self.ivf_lists = max(1, len(vecs) // 4)
            self._index = self._new()
        self._index.train(vecs)

    def remove(self, ids: list[int]) -> int:
        """Deletes vectors by id; returns how many were there."""
        gone = [i for i in ids if i in self._pos]
        if not gone:
            return 0
        self._dead.update(self._pos.pop(i) for i in gone)
        if self.kind != "hnsw":
            self._index.remove_ids(np.asarray(gone, dtype=np.int64))
        if len(self._dead) > self.rebuild_ratio * self._n:
            if self.kind == "hnsw":
                self._rebuild()
            else:
                self._compact()
        return len(gone)

    def _compact(self) -> None:
        """Drops dead rows (flat, ivf: FAISS holds ids, not rows, so it is left as it is)."""
        live = sorted(self._pos.values())
        ids, vecs = self._ids[live], self._vecs[live]
        self._ids, self._vecs, self._n, self._dead = ids, vecs, len(live), set()
        self._pos = {int(i): row for row, i in enumerate(ids)}

    def _rebuild(self) -> None:
        """A new HNSW graph of the live vectors (its labels are rows, so they all change)."""
        live = sorted(self._pos.values())
        ids, vecs = self._ids[live], self._vecs[live]
        self._ids = np.zeros(0, dtype=np.int64)
        self._vecs = np.zeros((0, self.dim), dtype=np.float32)
        self._n, self._pos, self._dead = 0, {}, set()
        self._index = self._new()
        if len(ids):
            self.upsert(ids, vecs)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best ids and their scores for one query vector (fewer if the index is smaller)."""
        q = self._check(np.asarray(query, dtype=np.float32).reshape(1, -1))
        k = min(k, len(self._pos))
        if k == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        # One query runs on one thread. FAISS's OpenMP team splits a single query badly (a flat
        # scan of 100,000 vectors: 8.4 ms on one thread, 14.1 on two, here) and, right after an
        # encode, waits for the cores torch's own OpenMP runtime keeps spinning on (5 ms of a
        # 17 ms facts search; benchmarks/README.md, facts).
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            if self.kind == "hnsw" and self._dead:
                params = faiss.SearchParametersHNSW(
                    sel=faiss.IDSelectorNot(faiss.IDSelectorBatch(np.fromiter(self._dead, dtype=np.int64))),
                    efSearch=max(self.ef_search, k),
                )
                scores, labels = self._index.search(q, k, params=params)
            else:
                scores, labels = self._index.search(q, k)
        finally:
            faiss.omp_set_num_threads(threads)
        keep = labels[0] >= 0
        labels, scores = labels[0][keep], scores[0][keep]
        ids = self._ids[labels] if self.kind == "hnsw" else labels
        return ids, scores

    def save(self, directory: str, name: str) -> None:
        """Writes what `load` needs besides the vectors into `directory` (see the module doc).

        An HNSW index with tombstones is rebuilt first, so that the saved graph's positions are
        exactly the live vectors. Nothing is fsync'ed: the caller makes `directory` durable
        (a memory snapshot fsyncs its whole tree before renaming it into place).
        """
        if self.kind != "hnsw":
            return
        if self._dead:
            self._rebuild()
        graph, order = _files(directory, name)
        faiss.write_index(self._index, graph)
        np.save(order, self._ids[: self._n], allow_pickle=False)

    @classmethod
    def load(
        cls,
        directory: str,
        name: str,
        ids: np.ndarray,
        vecs: np.ndarray,
        dim: int,
        kind: Kind = "flat",
        **options: Any,
    ) -> DenseIndex:
        """A new index (`dim`, `kind` and `options` as for the constructor) holding `vecs`
        under `ids`, in any order.

        An `hnsw` index takes the graph `save` wrote into `directory` under `name` when there is
        one (its saved ids must be exactly `ids`); any other index, or an HNSW index with no
        saved graph, is built by inserting the vectors.
        """
        index = cls(dim, kind, **options)
        graph, saved_order = _files(directory, name)
        if kind != "hnsw" or not os.path.exists(graph):
            index.upsert(ids, vecs)
            return index
        # The graph's positions hold the ids saved beside it, in that order.
        order = np.load(saved_order, allow_pickle=False)
        row = {int(i): p for p, i in enumerate(ids)}
        index._index = faiss.read_index(graph)
        index._ids, index._vecs = order, vecs[[row[int(i)] for i in order]]
        index._n, index._pos = len(order), {int(i): p for p, i in enumerate(order)}
        return index

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Live ids and their vectors (for snapshots and rebuilds)."""
        live = sorted(self._pos.values())
        return self._ids[live], self._vecs[live]


def _files(directory: str, name: str) -> tuple[str, str]:
    # The names snapshots have always used; persisted memories depend on them.
    return (
        os.path.join(directory, f"dense-{name}.faiss"),
        os.path.join(directory, f"dense-{name}.labels.npy"),
    )
