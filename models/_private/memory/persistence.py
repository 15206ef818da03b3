"""How a `HybridMemory` is kept on disk: the write-ahead log's entries and the snapshots.

Every write is appended to a checksummed write-ahead log (the journal of the swarm runtime) and
fdatasync'ed before it returns. A log entry is one of
- `{"op": "upsert", "records": [Record dicts], "vectors": [base64 float32, one per record]}`
  (each record's vectors, all its chunks, flattened),
- `{"op": "delete", "ids": [...]}`,
- `{"op": "access", "counts": {id: [access_count, tier]}}`.

A snapshot is a directory `snapshot-NNNNNN-<12 hex>` under the memory's path (the number counts
up, the random suffix keeps two nodes' snapshots of one number apart; older memories' plain
`snapshot-NNNNNN` still load) holding the records
(`records.jsonl`, `Record` dicts), their vectors (`vectors.npy`, every record's chunks in
record order), each record's dense labels (`labels.json`), the files each `DenseIndex` saves,
and a copy of the tantivy index (`lexical/`). It is written as `<name>.tmp`, fsync'ed,
renamed into place, and then named by the `CURRENT` pointer, replaced atomically; the memory
empties its log after that. Opening a memory loads the current snapshot and replays the log.
Nothing stored is pickled. Existing memories depend on every name and shape here.

A memory whose path is an fsspec URI (`s3://bucket/memory/x`) keeps the same layout there: its
log is a journal on that URI, and each snapshot, written into a local working copy first, is
uploaded whole before the remote `CURRENT` names it (`push_snapshot`), so any node can open the
memory from the URI alone (`pull_snapshot`). The URI is the truth: a node opening it takes the
snapshot the remote `CURRENT` names, and none when the URI has none, whatever its local copy holds.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models._private.core import env
from models._private.core.files import fsync_tree
from models._private.core.private_files import restrict_tree, write_private
from models._private.memory.schema import Record
from models._private.retrieval.dense import DenseIndex

__all__ = [
    "Snapshot",
    "access_entry",
    "delete_entry",
    "load_dense",
    "local_copy",
    "prune_snapshots",
    "pull_snapshot",
    "push_snapshot",
    "read_snapshot",
    "read_upsert",
    "upsert_entry",
    "write_snapshot",
]


# -- the write-ahead log ------------------------------------------------------------------------


def upsert_entry(records: Iterable[Record], vectors: Iterable[np.ndarray]) -> dict[str, Any]:
    """The log entry of an upsert: the records and each one's vectors, (chunks, dim)."""
    return {
        "op": "upsert",
        "records": [r.model_dump() for r in records],
        "vectors": [_b64(v) for v in vectors],
    }


def delete_entry(ids: list[str]) -> dict[str, Any]:
    """The log entry of a delete."""
    return {"op": "delete", "ids": ids}


def access_entry(counts: dict[str, tuple[int, str]]) -> dict[str, Any]:
    """The log entry of access counts: id -> (access_count, tier)."""
    return {"op": "access", "counts": counts}


def read_upsert(entry: dict[str, Any], dim: int) -> tuple[list[Record], list[np.ndarray]]:
    """The records and their vectors, (chunks, dim) each, of a logged upsert."""
    records = [Record.model_validate(r) for r in entry["records"]]
    return records, [_unb64(v).reshape(-1, dim) for v in entry["vectors"]]


def _b64(vec: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vec, dtype=np.float32).tobytes()).decode()


def _unb64(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float32)


# -- snapshots ----------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """A snapshot as read back: its directory, and the records with their vectors and labels."""

    path: str
    records: list[Record]
    vectors: list[np.ndarray]  # one (chunks, dim) array per record, in the order of `records`
    labels: dict[str, list[int]]  # record id -> one dense label per chunk

    @property
    def lexical(self) -> str:
        """The directory of the snapshot's copy of the tantivy index."""
        return os.path.join(self.path, "lexical")


def write_snapshot(
    root: str,
    records: dict[str, Record],
    vectors: dict[str, np.ndarray],
    labels: dict[str, list[int]],
    dense: dict[str, DenseIndex],
    lexical_dir: str,
    dim: int,
) -> str:
    """Writes the next snapshot under `root` and points `CURRENT` at it; returns its directory.

    A crash at any point leaves `CURRENT` naming a whole snapshot (the old one or this). Saving
    an HNSW index with tombstones rebuilds it (see `DenseIndex.save`). Older snapshots stay
    until `prune_snapshots`: the caller empties its log first.
    """
    taken = [int(n[9:15]) for n in os.listdir(root) if n.startswith("snapshot-") and n[9:15].isdigit()]
    final = os.path.join(root, f"snapshot-{max(taken, default=0) + 1:06d}-{uuid.uuid4().hex[:12]}")
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    ids = list(records)
    with open(os.path.join(tmp, "records.jsonl"), "w") as f:
        for i in ids:
            f.write(json.dumps(records[i].model_dump()) + "\n")
    np.save(
        os.path.join(tmp, "vectors.npy"),
        np.concatenate([vectors[i] for i in ids]) if ids else np.zeros((0, dim), np.float32),
        allow_pickle=False,
    )
    with open(os.path.join(tmp, "labels.json"), "w") as f:
        json.dump({i: labels[i] for i in ids}, f)
    for ns, index in dense.items():
        index.save(tmp, ns)
    shutil.copytree(lexical_dir, os.path.join(tmp, "lexical"))
    restrict_tree(tmp)
    fsync_tree(tmp)
    os.replace(tmp, final)
    write_private(os.path.join(root, "CURRENT"), os.path.basename(final))
    return final


def prune_snapshots(root: str, keep: str) -> None:
    """Removes every snapshot directory under `root` (and leftover temp ones) but `keep`."""
    for name in os.listdir(root):
        if name.startswith("snapshot-") and name != os.path.basename(keep):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def read_snapshot(root: str) -> Snapshot | None:
    """The snapshot `CURRENT` under `root` names, or None when there is none yet."""
    current = os.path.join(root, "CURRENT")
    if not os.path.exists(current):
        return None
    snap = os.path.join(root, Path(current).read_text().strip())
    lines = Path(snap, "records.jsonl").read_text().splitlines()
    records = [Record.model_validate_json(line) for line in lines]
    vectors = np.load(os.path.join(snap, "vectors.npy"), allow_pickle=False)
    labels = json.loads(Path(snap, "labels.json").read_text())  # id -> chunk labels
    # Each record's chunks lie next to each other, in record order, one per label.
    bounds = np.cumsum([0] + [len(labels[r.id]) for r in records])
    per_record = [vectors[a:b] for a, b in itertools.pairwise(bounds)]
    return Snapshot(snap, records, per_record, labels)


def load_dense(snap: Snapshot, namespaces: list[str], dim: int, kind: str) -> dict[str, DenseIndex]:
    """Each of `namespaces` that has records in `snap`, mapped to its dense index, loaded."""
    dense = {}
    for ns in namespaces:
        mine = [j for j, r in enumerate(snap.records) if r.namespace == ns]
        if not mine:
            continue
        ids = np.array([lb for j in mine for lb in snap.labels[snap.records[j].id]], dtype=np.int64)
        vecs = np.concatenate([snap.vectors[j] for j in mine])
        dense[ns] = DenseIndex.load(snap.path, ns, ids, vecs, dim, kind)
    return dense


# -- a memory on an fsspec URI ------------------------------------------------------------------


def local_copy(uri: str) -> str:
    """The local working directory of the memory at `uri` (its lexical index, snapshots being
    written and read), under swarmray's cache (`env.cache_dir`)."""
    return env.cache_dir("memory", hashlib.sha256(uri.encode()).hexdigest()[:16])


def push_snapshot(local_snapshot: str, uri: str) -> None:
    """Uploads a snapshot directory whole, then points the remote `CURRENT` at it, then removes
    the remote snapshots it replaces: `CURRENT` only ever names a whole snapshot."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri)
    name = os.path.basename(local_snapshot)
    fs.put(local_snapshot, f"{root}/{name}", recursive=True)
    fs.pipe_file(f"{root}/CURRENT", name.encode())
    for other in fs.ls(root, detail=False):
        base = other.rstrip("/").rsplit("/", 1)[-1]
        if base.startswith("snapshot-") and base != name:
            fs.rm(other, recursive=True)


def pull_snapshot(uri: str, local_root: str) -> None:
    """Makes `local_root` hold the snapshot the remote `CURRENT` names (downloaded unless it is
    there already: names are unique, so one there is that one) and point its own `CURRENT` at
    it, dropping every other local snapshot. When the URI has no snapshot (new, wiped or
    reused), the local copy's are dropped too: the memory starts from the URI's log alone."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri)
    if not fs.exists(f"{root}/CURRENT"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(local_root, "CURRENT"))
        prune_snapshots(local_root, keep="")
        return
    name = fs.cat_file(f"{root}/CURRENT").decode().strip()
    target = os.path.join(local_root, name)
    if not os.path.exists(target):
        shutil.rmtree(target + ".tmp", ignore_errors=True)
        fs.get(f"{root}/{name}", target + ".tmp", recursive=True)
        restrict_tree(target + ".tmp")
        os.replace(target + ".tmp", target)
    write_private(os.path.join(local_root, "CURRENT"), name)
    prune_snapshots(local_root, keep=name)
