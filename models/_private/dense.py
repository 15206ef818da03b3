"""Dense index on FAISS: exact inner product by default, HNSW or IVF for large collections.

Deletes really delete. `flat` and `ivf` remove vectors with `remove_ids`. HNSW graphs cannot
remove nodes (faiss#3339), so an `hnsw` index keeps deleted positions in a tombstone set that
every search excludes through an `IDSelector` (so top-k is exact over the live vectors, not a
post-filter that can come back short), and rebuilds the graph from the live vectors once a
fifth of it is tombstones. The trade-off: deleted vectors cost memory until that rebuild, and a
rebuild costs one pass of inserts; `flat` pays neither but searches in O(n).

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
        # Positions in the FAISS index and the ids they hold; HNSW adds by position only.
        self._ids = np.zeros(0, dtype=np.int64)
        self._vecs = np.zeros((0, dim), dtype=np.float32)
        self._pos: dict[int, int] = {}  # id -> live position
        self._dead: set[int] = set()  # tombstoned positions (hnsw)
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
        start = len(self._ids)
        self._ids = np.concatenate([self._ids, ids])
        self._vecs = np.concatenate([self._vecs, vecs])
        for offset, i in enumerate(ids):
            self._pos[int(i)] = start + offset
        if self.kind == "hnsw":
            self._index.add(vecs)
        else:
            self._index.add_with_ids(vecs, ids)

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
        positions = [self._pos.pop(i) for i in gone]
        if self.kind == "hnsw":
            self._dead.update(positions)
            if len(self._dead) > self.rebuild_ratio * len(self._ids):
                self._rebuild()
        else:
            self._index.remove_ids(np.asarray(gone, dtype=np.int64))
            self._dead.update(positions)  # only to know which stored vectors are live
        return len(gone)

    def _rebuild(self) -> None:
        live = sorted(self._pos.values())
        ids, vecs = self._ids[live], self._vecs[live]
        self._ids = np.zeros(0, dtype=np.int64)
        self._vecs = np.zeros((0, self.dim), dtype=np.float32)
        self._pos, self._dead = {}, set()
        self._index = self._new()
        if len(ids):
            self.upsert(ids, vecs)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best ids and their scores for one query vector (fewer if the index is smaller)."""
        q = self._check(np.asarray(query, dtype=np.float32).reshape(1, -1))
        k = min(k, len(self._pos))
        if k == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if self.kind == "hnsw" and self._dead:
            params = faiss.SearchParametersHNSW(
                sel=faiss.IDSelectorNot(faiss.IDSelectorBatch(np.fromiter(self._dead, dtype=np.int64))),
                efSearch=max(self.ef_search, k),
            )
            scores, labels = self._index.search(q, k, params=params)
        else:
            scores, labels = self._index.search(q, k)
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
        np.save(order, self._ids, allow_pickle=False)

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
        index._pos = {int(i): p for p, i in enumerate(order)}
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
