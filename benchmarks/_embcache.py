"""An on-disk cache of embeddings keyed by model and text hash, so benchmark reruns skip encoding.

One directory per model holds `keys.txt` (sha256 of each text, one per line) and `vectors.npy`
(the rows in the same order). Plain text and a numpy array, no pickle; both files are replaced
atomically, so an interrupted run leaves the previous cache intact.
"""

from __future__ import annotations

import hashlib
import os
import re

import numpy as np

from models import Embedder
from models._private.core import env


class EmbeddingCache:
    """Encodes texts with `embedder`, reusing vectors already stored under `root`.

    Stands in for the embedder wherever one is taken (e.g. `HybridMemory(embedder=...)`):
    everything but `encode` is the embedder's own.
    """

    def __init__(self, embedder: Embedder, root: str | None = None):
        self.embedder = embedder
        self.dir = os.path.join(root or env.cache_dir("embeddings"), re.sub(r"[^\w.-]", "_", embedder.name))
        self._row: dict[str, int] = {}
        self._vectors = np.zeros((0, embedder.dim), dtype=np.float32)
        keys = os.path.join(self.dir, "keys.txt")
        if os.path.exists(keys):
            with open(keys) as f:
                self._row = {k: i for i, k in enumerate(f.read().split())}
            self._vectors = np.load(os.path.join(self.dir, "vectors.npy"))
            # Vectors are written before keys and only grow, so extra rows are a cut-short save.
            if len(self._vectors) < len(self._row) or self._vectors.shape[1] != embedder.dim:
                self._row, self._vectors = {}, np.zeros((0, embedder.dim), dtype=np.float32)
            self._vectors = self._vectors[: len(self._row)]
        self.hits = self.misses = 0

    def __getattr__(self, name: str):
        return getattr(self.embedder, name)

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    def encode(self, texts: list[str]) -> np.ndarray:
        keys = [self.key(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._row))
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        if missing:
            text_of = dict(zip(keys, texts, strict=True))
            fresh = self.embedder.encode([text_of[k] for k in missing])
            start = len(self._vectors)
            self._vectors = np.concatenate([self._vectors, fresh])
            self._row.update({k: start + i for i, k in enumerate(missing)})
            self._save()
        return self._vectors[[self._row[k] for k in keys]]

    def _save(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        order = sorted(self._row, key=self._row.__getitem__)
        for name, write in (
            ("vectors.npy", lambda f: np.save(f, self._vectors)),
            ("keys.txt", lambda f: f.write("\n".join(order).encode())),
        ):
            tmp = os.path.join(self.dir, name + ".tmp")
            with open(tmp, "wb") as f:
                write(f)
            os.replace(tmp, os.path.join(self.dir, name))
