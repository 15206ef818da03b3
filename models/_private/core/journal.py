"""An append-only, checksummed journal with group commit, on a local path or an fsspec URI.

Each record is framed as `length (u32) | crc32 (u32) | JSON payload`, so a reader can tell a
record that was written whole from one torn by a crash: replay stops at the first frame that is
short or fails its checksum, and drops it and everything after it (on a local file the torn
tail is also cut off, so the next append starts clean). Nothing is ever misread. Locally a
short write is continued, and a failed one is cut back to the last whole record before
anything else is written, so a full disk costs the batch that failed (whose appends raise,
unacknowledged) and never the records after it.

Layout under the journal's root:
- local path: `gen-000001.log`, one file per generation, appended to with O_APPEND and
  fdatasync'ed per batch when `sync` is on.
- any other fsspec URI (s3://, gs://, memory://, ...): object stores cannot append, so each
  batch is a new object `gen-000001/00000042.log`, and a compacted generation starts with one
  object `gen-000001/base.log`.

Compaction (`rewrite`) writes the live records as a new generation and then deletes the older
ones: a temp file renamed into place locally, a single `base.log` object remotely. Replay reads
only the newest complete generation, so a crash in the middle of compaction loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

from models._private.core.metrics import journal_metrics, keep, safely
from models._private.core.private_files import open_private, private_dir, write_private
from models._private.core.uris import redact_uri

__all__ = ["Journal", "decode", "encode", "is_local", "journal_location", "nested_in"]

_FRAME = struct.Struct("<II")


def encode(record: dict[str, Any]) -> bytes:
    """One framed record."""
    payload = json.dumps(record, separators=(",", ":"), default=str).encode()
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def decode(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The whole records in `data` and the byte length they span; a torn tail is left out."""
    records, pos = [], 0
    while pos + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, pos)
        end = pos + _FRAME.size + length
        payload = data[pos + _FRAME.size : end]
        if end > len(data) or zlib.crc32(payload) != crc:
            break
        try:
            records.append(json.loads(payload))
        except ValueError:
            break
        pos = end
    return records, pos


def is_local(uri: str) -> bool:
    """Whether `uri` is a local path (or a file:// URI) rather than another fsspec URI."""
    return "://" not in uri or uri.startswith("file://")


def journal_location(base: str | None, namespace: str, owner: str) -> str:
    """Where `owner` (a swarm's name, `_registry`, `_memory/<name>`) of `namespace` keeps its
    journal: `<base>/<namespace>/<owner>`, with `base` ~/.swarmray/journal when None.

    A configured base (a bucket, a shared folder) may hold other data and other systems: the
    owner writes and deletes only below its own prefix.
    """
    if base is None:
        base = os.path.join("~", ".swarmray", "journal")
    if "://" in base:
        return f"{base.rstrip('/')}/{namespace}/{owner}"
    return os.path.join(os.path.abspath(os.path.expanduser(base)), namespace, owner)


def nested_in(inner: str, outer: str) -> bool:
    """Whether location `inner` is `outer` or lies below it (purging `outer` would delete it)."""
    return (inner.rstrip("/") + "/").startswith(outer.rstrip("/") + "/")


class _LocalLog:
    def __init__(self, root: str, sync: bool):
        self.root, self.sync = root, sync
        private_dir(root)
        gens = self._generations()
        self.gen = gens[-1] if gens else 1
        self._fd: int | None = None
        self._whole = 0  # bytes of whole records in the open generation

    def _generations(self) -> list[int]:
        out = []
        for name in os.listdir(self.root):
            if name.startswith("gen-") and name.endswith(".log"):
                out.append(int(name[4:-4]))
        return sorted(out)

    def _path(self, gen: int) -> str:
        return os.path.join(self.root, f"gen-{gen:06d}.log")

    def read(self) -> list[dict[str, Any]]:
        path = self._path(self.gen)
        if not os.path.exists(path):
            return []
        with open(path, "rb") as f:
            data = f.read()
        records, good = decode(data)
        if good < len(data):  # cut the torn tail so that appends follow whole records
            with open(path, "r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())
        return records

    def write(self, data: bytes) -> None:
        if self._fd is None:
            self._fd = open_private(self._path(self.gen), os.O_WRONLY | os.O_APPEND)
            self._whole = os.fstat(self._fd).st_size  # read() has cut any torn tail already
        if os.fstat(self._fd).st_size != self._whole:
            # A failed write left part of a batch: cut it off before anything follows it, or
            # replay would stop there and drop every later record.
            os.ftruncate(self._fd, self._whole)
        view = memoryview(data)
        try:
            while view:  # os.write may write less than it was given
                view = view[os.write(self._fd, view) :]
            if self.sync:
                os.fdatasync(self._fd)
        except BaseException:
            try:
                os.ftruncate(self._fd, self._whole)
            except OSError:
                pass  # cut again before the next write, above
            raise
        self._whole += len(data)

    def rewrite(self, data: bytes) -> None:
        write_private(self._path(self.gen + 1), data)
        self.close()
        old, self.gen = self.gen, self.gen + 1
        for gen in self._generations():
            if gen <= old:
                os.remove(self._path(gen))

    def size(self) -> int:
        path = self._path(self.gen)
        return os.path.getsize(path) if os.path.exists(path) else 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def purge(self) -> None:
        self.close()
        for gen in self._generations():
            os.remove(self._path(gen))


class _ObjectLog:
    def __init__(self, uri: str):
        import fsspec

        self.fs, self.root = fsspec.core.url_to_fs(uri)
        self.fs.makedirs(self.root, exist_ok=True)
        gens = self._generations()
        self.gen = gens[-1] if gens else 1
        self._next = len(self._objects(self.gen))
        self._bytes = 0

    def _generations(self) -> list[int]:
        gens = []
        for path in self.fs.ls(self.root, detail=False):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("gen-") and name[4:].isdigit():
                gen = int(name[4:])
                if gen == 1 or self.fs.exists(f"{self.root}/{name}/base.log"):
                    gens.append(gen)  # later generations count once their base is whole
        return sorted(gens)

    def _objects(self, gen: int) -> list[str]:
        folder = f"{self.root}/gen-{gen:06d}"
        if not self.fs.exists(folder):
            return []
        return sorted(p for p in self.fs.ls(folder, detail=False) if p.endswith(".log"))

    def read(self) -> list[dict[str, Any]]:
        records = []
        # base.log sorts after the numbered batches; it comes first in time.
        objects = self._objects(self.gen)
        objects = sorted(objects, key=lambda p: not p.endswith("base.log"))
        for path in objects:
            data = self.fs.cat_file(path)
            self._bytes += len(data)
            batch, good = decode(data)
            records.extend(batch)
            if good < len(data):
                break  # a torn object ends what can be trusted
        return records

    def write(self, data: bytes) -> None:
        self.fs.pipe_file(f"{self.root}/gen-{self.gen:06d}/{self._next:08d}.log", data)
        self._next += 1
        self._bytes += len(data)

    def rewrite(self, data: bytes) -> None:
        new = self.gen + 1
        self.fs.pipe_file(f"{self.root}/gen-{new:06d}/base.log", data)
        old, self.gen, self._next, self._bytes = self.gen, new, 0, len(data)
        for gen in range(1, old + 1):
            folder = f"{self.root}/gen-{gen:06d}"
            if self.fs.exists(folder):
                self.fs.rm(folder, recursive=True)

    def size(self) -> int:
        return self._bytes

    def close(self) -> None:
        pass

    def purge(self) -> None:
        if self.fs.exists(self.root):
            self.fs.rm(self.root, recursive=True)


class Journal:
    """A durable, ordered log of dict records.

    `append` returns once its record is stored (fdatasync'ed locally when `sync`); records
    appended while a write is under way go out together in the next one (group commit), so
    many concurrent appends cost one sync. `append_nowait` queues a record for that next write
    without waiting for it.
    """

    def __init__(self, uri: str, sync: bool = True, system: str = "-"):
        self.uri = uri
        # Its metrics' tags: the system it belongs to ("-" for none) and where it is.
        # Never the credentials a URI may carry: the label is scraped by whoever reads metrics.
        self._tags = {"system": system, "journal": redact_uri(uri).replace(os.path.expanduser("~"), "~", 1)}
        self._log = _LocalLog(uri.removeprefix("file://"), sync) if is_local(uri) else _ObjectLog(uri)
        # Encoded records not written yet, each marked whether an `append` waits for it (a
        # failed write tells that waiter; a record of `append_nowait` goes back in the queue).
        self._pending: list[tuple[bytes, bool]] = []
        self._waiters: list[asyncio.Future] = []
        self._writer: asyncio.Task | None = None
        self._rewrites: list[tuple[Callable[[], list[dict[str, Any]]], asyncio.Future]] = []

    def read(self) -> list[dict[str, Any]]:
        """Every whole record of the current generation, oldest first."""
        return self._log.read()

    def size_bytes(self) -> int:
        """Bytes in the current generation."""
        return self._log.size() + sum(len(data) for data, _ in self._pending)

    async def append(self, *records: dict[str, Any]) -> None:
        """Stores `records` in order; returns when they are durable."""
        fut = asyncio.get_running_loop().create_future()
        self._pending.extend((encode(r), True) for r in records)
        self._waiters.append(fut)
        self._kick()
        await fut

    def write_now(self, *records: dict[str, Any]) -> None:
        """Stores `records` at once, without group commit (for callers with no event loop)."""
        self._write(b"".join(encode(r) for r in records))

    def _write(self, data: bytes) -> None:
        began = time.perf_counter()
        self._log.write(data)
        safely(self._measured, time.perf_counter() - began, self._log.size(), False)

    def _measured(self, seconds: float | None, size: int, compacted: bool) -> None:
        metrics = journal_metrics()
        if seconds is not None:
            metrics.sync_s.observe(seconds, self._tags)
        if compacted:
            metrics.compactions.inc(1, self._tags)
        keep(metrics.bytes, size, **self._tags)

    def expect_compaction_at(self, size_bytes: float) -> None:
        """Says, for its metric, past which size the owner compacts this journal next; a
        journal that grows well past it is not being compacted (an alert watches for that)."""
        safely(lambda: keep(journal_metrics().compact_at, size_bytes, **self._tags))

    def reset(self) -> None:
        """Empties the journal at once (a new, empty generation), for callers with no event loop."""
        self._log.rewrite(b"")

    def rewrite_now(self, *records: dict[str, Any]) -> None:
        """Compacts at once: replaces the journal by `records`, for callers with no event loop
        (and so with no append of their own in flight)."""
        base = b"".join(encode(r) for r in records)
        self._log.rewrite(base)
        safely(self._measured, None, len(base), True)

    def append_nowait(self, *records: dict[str, Any], wake: bool = True) -> None:
        """Queues `records` for the next write, in order with every other append.

        With `wake=False` they only ride along with the next write someone else causes, so a
        record that needs no sync of its own costs none. A write that fails does not drop
        them: they stay queued for the next one, which their owner's `flush` waits for.
        """
        self._pending.extend((encode(r), False) for r in records)
        if wake:
            self._kick()

    async def flush(self) -> None:
        """Waits until everything appended so far is durable."""
        if self._pending or (self._writer and not self._writer.done()):
            await self.append()

    async def rewrite(self, build: Callable[[], list[dict[str, Any]]]) -> None:
        """Compacts: replaces the journal by the records `build()` returns.

        `build` is called by the writer between two writes, after at most one more write, so a
        compaction takes its turn under any load. No append can slip between the state it reads
        and the new generation: appends not yet written then follow in the new one. Replay must
        therefore take a record it already has as a no-op.
        """
        fut = asyncio.get_running_loop().create_future()
        self._rewrites.append((build, fut))
        self._kick()
        await fut

    def purge(self) -> None:
        """Deletes the journal and everything in it."""
        self._log.purge()

    def close(self) -> None:
        """Releases the open file."""
        self._log.close()

    def _kick(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def _write_loop(self) -> None:
        while self._pending or self._waiters or self._rewrites:
            batch, self._pending = self._pending, []
            waiters, self._waiters = self._waiters, []
            data = b"".join(d for d, _ in batch)
            try:
                if data:
                    await asyncio.to_thread(self._write, data)
            except BaseException as e:
                # Not stored. The waiters of this write are told; the records nobody waits
                # for go back in front of those queued since, for their owners' `flush`.
                self._pending[:0] = [(d, owned) for d, owned in batch if not owned]
                _settle(waiters, e)
                if not isinstance(e, Exception):
                    raise
                if not self._waiters and not self._rewrites:
                    return  # the requeued records wait for the next append or flush
                continue  # appends made during this write are answered by the next one
            _settle(waiters)
            # A compaction waits for one write at most, so appends arriving without pause
            # cannot starve it. Appends made during that write are still pending: they go into
            # the new generation after the compacted state.
            if self._rewrites:
                build, fut = self._rewrites.pop(0)
                try:
                    base = b"".join(encode(r) for r in build())
                    await asyncio.to_thread(self._log.rewrite, base)
                except BaseException as e:
                    _settle([fut], e)
                    raise
                _settle([fut])
                safely(self._measured, None, len(base), True)


def _settle(waiters: list[asyncio.Future], error: BaseException | None = None) -> None:
    for w in waiters:
        if not w.done():
            if error is None:
                w.set_result(None)
            else:
                w.set_exception(error)
