"""How a `HybridMemory` keeps itself: every write logged (access counts riding along),
snapshots, and restoring on open (the current snapshot, then the log replayed). The log's
entries and the snapshots' layout are in `persistence`."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Awaitable
from typing import Any

from models._private.core.errors import MemoryInputError
from models._private.core.journal import Journal
from models._private.memory.persistence import (
    access_entry,
    load_dense,
    prune_snapshots,
    pull_snapshot,
    push_snapshot,
    read_snapshot,
    read_upsert,
    write_snapshot,
)

__all__ = ["DurabilityMixin"]

log = logging.getLogger(__name__)


class DurabilityMixin:
    """The log, snapshots and restore of `HybridMemory` (`hybrid`), which supplies its records,
    vectors, labels, indexes, `wal` and paths, and the `_apply_*` steps a replay repeats."""

    def _log(self, entry: dict[str, Any], synced: bool = True) -> None:
        if self.wal is not None:
            entries = [entry]
            if self._pending_access:
                entries.insert(0, access_entry(self._pending_access))
                self._pending_access = {}
            if synced:
                self.wal.write_now(*entries)
            else:
                self._unsynced.extend(entries)

    def sync_log(self) -> Awaitable[None]:
        """Hands the log entries of `synced=False` writes to the journal now and returns what
        to await for them (and any queued before) to be stored: writers that await together
        share one write and fdatasync, and those arriving while it runs share the next.

        Call it on the event loop, in the same turn as the writes it covers and before any
        other write logs (writes logged with `synced=True` go straight to the file, so they
        must wait until this has been awaited: `MemoryStore` does so under its writer lock).
        """
        if self.wal is None:
            return asyncio.sleep(0)
        if self._unsynced:
            entries, self._unsynced = self._unsynced, []
            self.wal.append_nowait(*entries, wake=False)
        return self.wal.flush()

    def _flush_access(self) -> None:
        if self.wal is not None and self._pending_access:
            self.wal.write_now(access_entry(self._pending_access))
            self._pending_access = {}

    def snapshot(self) -> str:
        """Writes a snapshot atomically and empties the log; returns the snapshot directory.

        This is the memory's compaction: afterwards no file of it holds a deleted record's text
        (the log is emptied, older snapshots removed, and the lexical index, which keeps a
        deleted document's terms until it is rebuilt, is rebuilt after any delete).
        """
        if not self.config.path:
            raise MemoryInputError("path", "this memory has no path to snapshot to")
        self._flush_access()
        if self.lexical.deleted_since_build:
            self.lexical.rebuild(self._lexical_docs())
        self.lexical.refresh()  # the copy below holds committed writes only
        root = self._root
        final = write_snapshot(
            root, self.records, self.vectors, self._label, self.dense, self.lexical.index_dir, self.dim
        )
        if self._remote:
            push_snapshot(final, self._remote)
        self.wal.reset()  # everything in it is in the snapshot now
        self.superseded = 0
        prune_snapshots(root, keep=final)
        return final

    def _restore(self) -> None:
        root = self._root
        os.makedirs(root, exist_ok=True)
        if self._remote:
            pull_snapshot(self._remote, root)
        snap = read_snapshot(root)
        if snap is not None:
            for r in snap.records:
                self._label[r.id] = snap.labels[r.id]
                self._by_label.update(dict.fromkeys(snap.labels[r.id], r.id))
            self._labels = itertools.count(max((max(v) for v in snap.labels.values()), default=0) + 1)
            self.lexical.load(snap.lexical)
            for r, vecs in zip(snap.records, snap.vectors, strict=True):
                self.records[r.id], self.vectors[r.id] = r, vecs
                self._touch_working(r)
            self.dense.update(load_dense(snap, self.namespaces, self.dim, self.config.dense_kind))
        elif self.lexical.num_docs:  # a lexical index with no snapshot: start it afresh
            self.lexical.rebuild([])
        wal = f"{self._remote.rstrip('/')}/wal" if self._remote else os.path.join(root, "wal")
        self.wal = Journal(wal, sync=self.config.sync, system=self.system)
        for entry in self.wal.read():
            self._replay(entry)
        if self.lexical.damaged:  # derived from the records: they rebuild it, the memory still opens
            log.warning("rebuilding the lexical index of %s from its %d records", root, len(self.records))
            self.lexical.rebuild(self._lexical_docs())

    def _replay(self, entry: dict[str, Any]) -> None:
        if entry["op"] == "upsert":
            batch, vecs = read_upsert(entry, self.dim)
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
