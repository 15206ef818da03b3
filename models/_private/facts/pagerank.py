"""Personalised PageRank over documents and entities, the graph rerank HippoRAG uses: a walk
that starts again, with probability 1 - damping at each step, from the query's entities and best
passages, and spends most of its time near them."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import sparse

__all__ = ["DocumentGraph"]


class DocumentGraph:
    """Documents and entities as one undirected graph: a document links to the entities it
    mentions, an entity to those it shares a fact with.

    Args:
        mentions: (document id, entity id) pairs.
        edges: (entity id, entity id) pairs, one per fact between two entities.
    """

    def __init__(self, mentions: Iterable[tuple[str, str]], edges: Iterable[tuple[str, str]]):
        self.index: dict[tuple[str, str], int] = {}
        rows, cols = [], []
        for a, b in [(("d", d), ("e", e)) for d, e in mentions] + [(("e", s), ("e", o)) for s, o in edges]:
            i, j = self._node(a), self._node(b)
            if i != j:
                rows += [i, j]
                cols += [j, i]
        n = len(self.index)
        adjacency = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
        degree = np.asarray(adjacency.sum(axis=0)).ravel()
        degree[degree == 0] = 1
        self.walk = (adjacency @ sparse.diags(1.0 / degree)).tocsr()  # column-stochastic
        self.documents = {key[1]: i for key, i in self.index.items() if key[0] == "d"}

    def _node(self, key: tuple[str, str]) -> int:
        return self.index.setdefault(key, len(self.index))

    def rank(
        self,
        entities: dict[str, float],
        documents: dict[str, float],
        damping: float = 0.5,
        iterations: int = 30,
    ) -> dict[str, float]:
        """Documents' PageRank personalised to `entities` and `documents` (id -> weight);
        an empty dict when no start is in the graph."""
        start = np.zeros(len(self.index))
        for kind, weights in (("e", entities), ("d", documents)):
            for key, w in weights.items():
                if (i := self.index.get((kind, key))) is not None:
                    start[i] += w
        if not start.any():
            return {}
        start /= start.sum()
        x = start
        for _ in range(iterations):
            x = (1 - damping) * start + damping * (self.walk @ x)
        return {d: float(x[i]) for d, i in self.documents.items() if x[i] > 0}
