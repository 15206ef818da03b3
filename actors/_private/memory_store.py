"""MemoryStore: a Ray actor around HybridMemory, and the async client agents use."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import ray
from aiorwlock import RWLock

from actors._private.agents.agent import call_maybe_async
from actors._private.config import MemoryStoreConfig
from actors._private.metrics import MemoryMetrics
from models._private.core import names
from models._private.core.journal import journal_location
from models._private.core.retry import retrying

__all__ = ["MemoryClient", "MemoryStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class MemoryStore:
    """One swarm's memory (or the `global` one); a named, detached Ray actor `memory:<name>`.

    Searches run concurrently in worker threads (FAISS and tantivy release the GIL); writes
    are serialised and return once logged durably. Expiry, promotion and consolidation run
    every `sweep_period_s`, a snapshot every `snapshot_period_s` (which also empties the log).
    """

    def __init__(self, namespace: str, name: str, config: MemoryStoreConfig, memory: Any = None):
        """`memory` is built from `config` unless given (tests pass a stand-in)."""
        self.name = name
        self.config = config
        if memory is None:
            from models._private.memory.hybrid import HybridMemory

            memory_cfg = config.memory
            if memory_cfg.path is None:
                memory_cfg = memory_cfg.model_copy(
                    update={"path": journal_location(None, namespace, f"_memory/{name}")}
                )
            memory = HybridMemory(config.namespaces or [name], memory_cfg, system=namespace)
        self.memory = memory
        # A search that names no namespace looks in the store's own (the one agents write to
        # by default), so that records kept apart in another (the demo's) stay out of it.
        self.own_namespaces = [name] if name in memory.namespaces else None
        # aiorwlock: many readers or one writer, waiters served in order (so a waiting writer
        # holds off new readers), and a waiter that is cancelled leaves no trace.
        self._lock = RWLock()
        self._loop: asyncio.Task | None = None
        self.metrics = MemoryMetrics(namespace, name)
        self.metrics.records(len(self.memory.records))

    def _ensure_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop().create_task(self._maintain())

    async def upsert(self, records: list[dict], vectors: Any = None) -> list[str]:
        """Adds or replaces records (see `HybridMemory.upsert`); returns once durable.

        The write is applied under the writer lock and its log entry synced after the lock is
        released, so that writers arriving together share one fdatasync (group commit)."""
        self._ensure_loop()
        with self.metrics.timed("upsert"):
            async with self._lock.writer_lock:
                ids = await call_maybe_async(
                    functools.partial(self.memory.upsert, records, vectors, synced=False)
                )
                self.metrics.records(len(self.memory.records))
                synced = self.memory.sync_log()  # queued in order, before the lock is released
            await synced
            return ids

    async def delete(self, ids: list[str]) -> int:
        """Deletes records by id."""
        self._ensure_loop()
        return await self._locked("delete", self._lock.writer_lock, self.memory.delete, ids)

    async def get(self, ids: list[str]) -> list[dict]:
        """The records with these ids."""
        records = await self._locked("get", self._lock.reader_lock, self.memory.get, ids)
        return [r.model_dump() for r in records]

    async def search(self, query: str | None = None, k: int = 10, **kwargs: Any) -> list[dict]:
        """Hits as dicts: record, score, ranks, scores (see `HybridMemory.search`); without
        `namespaces`, in the store's own namespace when it holds one of its name, else in all."""
        self._ensure_loop()
        if kwargs.get("namespaces") is None:
            kwargs["namespaces"] = self.own_namespaces
        hits = await self._locked(
            "search", self._lock.reader_lock, lambda: self.memory.search(query, k, **kwargs)
        )
        return [h.model_dump() for h in hits]

    async def sweep(self) -> dict[str, int]:
        """Expiry, promotion and consolidation now."""
        return await self._locked("sweep", self._lock.writer_lock, self.memory.sweep)

    async def snapshot(self) -> str:
        """A snapshot now (also empties the log)."""
        return await self._locked("snapshot", self._lock.writer_lock, self.memory.snapshot)

    async def stats(self) -> dict[str, Any]:
        """Records per namespace and tier, the embedder and index kind."""
        return await self._locked("stats", self._lock.reader_lock, self._stats)

    def _stats(self) -> dict[str, Any]:
        counts: dict[str, dict[str, int]] = {}
        for r in self.memory.records.values():
            counts.setdefault(r.namespace, {}).setdefault(r.tier, 0)
            counts[r.namespace][r.tier] += 1
        return {
            "name": self.name,
            "records": len(self.memory.records),
            "by_namespace": counts,
            "embedder": self.memory.embedder.name,
            "dim": self.memory.dim,
            "dense_kind": self.memory.config.dense_kind,
            "namespaces": list(self.memory.namespaces),
            "pid": os.getpid(),
        }

    async def _locked(self, operation: str, lock: Any, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker thread while holding `lock`, timed as `operation`. A caller
        cancelled while it waits for the lock leaves at once; one cancelled once the thread has
        begun gives the lock back only when the thread ends (`call_maybe_async`), so nothing
        runs beside it."""
        with self.metrics.timed(operation):
            async with lock:
                if lock is self._lock.writer_lock:
                    # Upserts queued for a group sync are stored first: this write must follow
                    # them in the log, and must not write the log while their sync runs.
                    await self.memory.sync_log()
                out = await call_maybe_async(fn, *args)
                if lock is self._lock.writer_lock:
                    self.metrics.records(len(self.memory.records))
                return out

    async def _maintain(self) -> None:
        last_snapshot = time.monotonic()
        while True:
            await asyncio.sleep(self.config.sweep_period_s)
            try:
                await self.sweep()
                if time.monotonic() - last_snapshot >= self.config.snapshot_period_s:
                    last_snapshot = time.monotonic()
                    await self.snapshot()
            except Exception:
                log.exception("memory maintenance failed in %s", self.name)


class MemoryClient:
    """What an agent uses: its swarm's memory and the global one, by async calls.

    Example (inside an agent's async `handle`):
        mem = MemoryClient(namespace, "storage")
        await mem.upsert([{"id": "n1", "namespace": "storage", "text": "..."}])
        hits = await mem.search("...", k=5, scope="both")
    """

    def __init__(self, ray_namespace: str, swarm: str, retry_s: float = 60.0):
        self.ray_namespace = ray_namespace
        self.swarm = swarm
        self.retry_s = retry_s

    def _store(self, name: str) -> Any:
        return ray.get_actor(names.memory(name), namespace=self.ray_namespace)

    async def call(self, store: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """`store.method(*args, **kwargs)`, retried (tenacity) while Ray restarts the store."""
        async for attempt in retrying(self.retry_s, asynchronous=True):
            with attempt:
                return await getattr(self._store(store), method).remote(*args, **kwargs)

    def _scope(self, scope: str) -> list[str]:
        scopes = {"swarm": [self.swarm], "global": ["global"], "both": [self.swarm, "global"]}
        if scope not in scopes:
            raise ValueError(f"scope must be swarm, global or both, got {scope!r}")
        return scopes[scope]

    async def upsert(self, records: list[dict], scope: str = "swarm") -> list[str]:
        """Writes to the swarm's memory (`scope="swarm"`) or the global one (`"global"`)."""
        (store,) = self._scope(scope)
        return await self.call(store, "upsert", records)

    async def delete(self, ids: list[str], scope: str = "swarm") -> int:
        """Deletes records by id from the swarm's or the global memory."""
        (store,) = self._scope(scope)
        return await self.call(store, "delete", ids)

    async def search(self, query: str, k: int = 10, scope: str = "swarm", **kwargs: Any) -> list[dict]:
        """Searches the swarm's memory, the global one, or `both` (merged by score)."""
        results = await asyncio.gather(
            *(self.call(s, "search", query, k, **kwargs) for s in self._scope(scope))
        )
        return sorted((h for hits in results for h in hits), key=lambda h: -h["score"])[:k]
