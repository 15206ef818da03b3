"""One namespace of the facts service: a shard holding the namespace's `FactsBase`, with
background workers that index stored documents and read them with the extractor. It runs in a
Serve deployment of one replica (a Ray actor that Serve restarts when it dies), or inside the
ingress's one replica (`colocate`)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from types import SimpleNamespace
from typing import Any, TypeVar

from ray.exceptions import RayTaskError

from models._private.core.errors import ExtractorUnreachableError, FactsInputError
from models._private.core.metrics import safely
from models._private.core.retry import unwrap_error
from models._private.facts.base import FactsBase
from models._private.facts.schema import Document, DocumentIn, Entity, Fact, FactIn
from models._private.facts.search import SearchMode, SearchResult
from models._private.facts.store.graph import MAX_WALK_FACTS
from models._private.facts.store.temporal import MAX_FACTS_PAGE
from serve._private.facts.config import FactsNamespaceConfig
from serve._private.metrics import service_metrics

__all__ = ["ExtractorServer", "FactsShard", "InProcessShard", "RemoteExtractor"]

log = logging.getLogger("swarmray.serve.facts")
T = TypeVar("T")
_INDEX_BATCH = 256  # passages embedded per background step (fewer, longer batches pad less)
_RETRY_S = 5.0  # pause after a background step failed, before trying again
_CALL_THREADS = min(32, (os.cpu_count() or 1) + 4)  # the ingress's calls at once, as asyncio's pool
_WRITES = {  # operations (the metrics' labels) after which the namespace's counts change
    "add_documents",
    "delete_document",
    "add_facts",
    "invalidate_fact",
    "delete_fact",
    "merge_entities",
    "split_entity",
}


class ExtractorServer:
    """spaCy's reading of documents in processes of its own (the `facts-extractor` deployment):
    the parse holds the GIL, so in the shard's process it would slow the embedder, and here it
    scales out with replicas."""

    def __init__(self) -> None:
        from models._private.facts.spacy_extractor import SpacyExtractor

        self.extractor = SpacyExtractor()
        self.extractor.extract("Load the pipeline.")

    async def extract_many(self, texts: list[str]) -> list[Any]:
        return await asyncio.to_thread(self.extractor.extract_many, texts)


class RemoteExtractor:
    """The shard's side of `ExtractorServer`: the interface `FactsBase` expects, called from the
    shard's worker thread. The handle's calls run on an event loop of its own (a handle needs a
    running loop, and with Serve's throughput-optimised routing, the caller's). A query's names
    are read in-process (NER only, a few milliseconds: not worth a hop)."""

    name = "spacy"

    def __init__(self, handle: Any):
        from models._private.facts.spacy_extractor import SpacyExtractor

        self.handle, self.local = handle, SpacyExtractor()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="facts-extractor-calls", daemon=True).start()

    def extract_many(self, texts: list[str]) -> list[Any]:
        call = asyncio.run_coroutine_threadsafe(self._extract_many(texts), self._loop)
        try:
            return call.result()
        except RayTaskError as e:  # the extractor raised: the document's fault, it fails
            raise unwrap_error(e) from None
        except Exception as e:  # the way there failed (a replica restarting): the documents wait
            raise ExtractorUnreachableError(repr(e)) from e

    async def _extract_many(self, texts: list[str]) -> list[Any]:
        return await self.handle.extract_many.remote(texts)

    def extract(self, text: str) -> Any:
        return self.extract_many([text])[0]

    def mentions(self, text: str) -> list[Any]:
        return self.local.mentions(text)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


class InProcessShard:
    """A namespace's `FactsShard` inside the ingress's own process (`colocate`), asked as its
    deployment's handle would be (`shard.search.remote(...)`, awaited), so that the ingress has
    one way to ask either."""

    def __init__(self, shard: FactsShard):
        self.shard = shard

    def __getattr__(self, method: str) -> SimpleNamespace:
        return SimpleNamespace(remote=getattr(self.shard, method))


def _extractor(config: FactsNamespaceConfig, llm: dict[str, Any], reader: Any) -> Any:
    if config.extractor == "spacy":
        return RemoteExtractor(reader)
    if config.extractor == "llm":
        from models._private.facts.llm_extractor import LLMExtractor

        if not llm.get("base_url"):
            raise FactsInputError("ai_url", "extractor llm needs the AI service's URL")
        key = os.environ.get(llm["api_key_env"]) if llm.get("api_key_env") else None
        return LLMExtractor(llm["base_url"], config.llm_model or "", api_key=key)
    return None


class FactsShard:
    """The facts of one namespace, behind one method per operation the ingress asks for.

    Args:
        namespace: The facts namespace.
        config: Its FactsNamespaceConfig, dumped.
        path: Directory of its SQLite store and memory log.
        llm: base_url and api_key_env of the AI service, for extractor llm.
        reader: DeploymentHandle of the ExtractorServer, for extractor spacy.
        system: The system (Ray namespace) it belongs to, for its metrics.
    """

    def __init__(
        self,
        namespace: str,
        config: dict[str, Any],
        path: str,
        llm: dict[str, Any],
        reader: Any = None,
        system: str = "facts",
    ):
        import torch

        self.config = FactsNamespaceConfig.model_validate(config)
        # Ray sets OMP_NUM_THREADS to the actor's num_cpus (1 for 0): the embedder would crawl.
        torch.set_num_threads(self.config.torch_threads or os.cpu_count() or 1)
        self.base = FactsBase(
            path,
            namespace,
            config=self.config,
            memory=self.config.memory,
            extractor=_extractor(self.config, llm, reader),
            graph_weight=self.config.graph_weight,
            graph_rerank=self.config.graph_rerank,
            extract_max_attempts=self.config.extract_max_attempts,
            read_timeout_s=self.config.read_timeout_s,
        )
        self.namespace, self.metrics, self._counted = namespace, service_metrics(system, "facts"), 0.0
        self._threads = ThreadPoolExecutor(_CALL_THREADS, thread_name_prefix=f"facts-{namespace}")
        self._closed = False
        self._count(force=True)
        # Two workers, so that the embedder (which releases the GIL) indexes while spaCy parses.
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._workers = {
            name: (threading.Event(), threading.Thread(target=self._work, args=(name, step), daemon=True))
            for name, step in (
                ("index", lambda: self.base.index_pending(_INDEX_BATCH)),
                ("extract", lambda: self.base.extract_pending(self.config.extract_batch, read_ahead=True)),
            )
        }
        for wake, worker in self._workers.values():
            wake.set()  # documents left waiting by an earlier replica go first
            worker.start()

    # -- what the ingress asks: every call runs in a thread (the base serialises what must be) --

    async def stats(self) -> dict[str, Any]:
        return await self._run("stats", self.base.stats)

    async def add_documents(self, docs: list[DocumentIn], job: str | None, index: bool) -> list[Document]:
        return await self._run("add_documents", self._add_documents, docs, job, index)

    async def job_progress(self, job: str) -> dict[str, int]:
        return await self._run("job", self.base.job_progress, job)

    async def get_document(self, document_id: str) -> Document:
        return await self._run("document", self.base.store.document, document_id)

    async def delete_document(self, document_id: str) -> dict[str, Any]:
        return await self._run("delete_document", self.base.delete_document, document_id)

    async def add_facts(self, facts: list[FactIn]) -> list[Fact]:
        return await self._run("add_facts", self._add_facts, facts)

    async def get_fact(self, fact_id: str) -> Fact:
        return await self._run("fact", self.base.store.fact, fact_id)

    async def list_facts(
        self,
        *,
        subject_id: str | None = None,
        predicate: str | None = None,
        entity_id: str | None = None,
        as_of: datetime | None = None,
        include_history: bool = False,
        limit: int = MAX_FACTS_PAGE,
        cursor: str | None = None,
    ) -> tuple[list[Fact], str | None]:
        return await self._run(
            "facts",
            self.base.store.facts_page,
            subject_id=subject_id,
            predicate=predicate,
            entity_id=entity_id,
            as_of=as_of,
            include_history=include_history,
            limit=limit,
            cursor=cursor,
        )

    async def invalidate_fact(self, fact_id: str, invalid_at: datetime | None) -> Fact:
        return await self._run("invalidate_fact", self.base.invalidate_fact, fact_id, invalid_at)

    async def delete_fact(self, fact_id: str) -> None:
        return await self._run("delete_fact", self.base.delete_fact, fact_id)

    async def get_entity(self, entity_id: str) -> Entity:
        return await self._run("entity", self.base.store.entity, entity_id)

    async def find_entity(self, name: str, type_: str | None) -> list[Entity]:
        return await self._run("find_entity", self.base.store.find_entity, name, type_)

    async def neighbours(
        self,
        entity_id: str,
        depth: int,
        as_of: datetime | None,
        predicates: list[str] | None,
        limit: int = MAX_WALK_FACTS,
    ) -> dict[str, Any]:
        return await self._run("neighbours", self._neighbours, entity_id, depth, as_of, predicates, limit)

    async def find_path(
        self,
        entity_id: str,
        other_id: str,
        max_depth: int,
        *,
        as_of: datetime | None = None,
        predicates: list[str] | None = None,
    ) -> list[Fact] | None:
        return await self._run(
            "path", self.base.store.path, entity_id, other_id, max_depth, as_of=as_of, predicates=predicates
        )

    async def merge_entities(self, entity_id: str, other_id: str) -> Entity:
        return await self._run("merge_entities", self.base.merge_entities, entity_id, other_id)

    async def split_entity(self, entity_id: str, document_ids: list[str], name: str | None) -> Entity:
        return await self._run("split_entity", self.base.split_entity, entity_id, document_ids, name)

    async def search(
        self,
        query: str,
        *,
        k: int,
        mode: SearchMode,
        as_of: datetime | None,
        depth: int,
        filters: dict[str, Any] | None,
    ) -> SearchResult:
        return await self._run(
            "search", self.base.search, query, k=k, mode=mode, as_of=as_of, depth=depth, filters=filters
        )

    async def _run(self, operation: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`call` on the shard's own threads, off the event loop, timed under `operation` (the
        metrics' label); a write recounts what the namespace holds."""
        with self.metrics.facts_operation(self.namespace, operation):
            out = await self._in_thread(call, *args, **kwargs)
        if operation in _WRITES:
            await self._in_thread(self._count)
        return out

    async def _in_thread(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # As `asyncio.to_thread`, but on threads of this shard's own: colocated, the replica's
        # default pool (Serve sizes it by num_cpus, 4 at 0) would be every namespace's, so a few
        # slow reads of one would hold up all.
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        work = functools.partial(context.run, call, *args, **kwargs)
        return await loop.run_in_executor(self._threads, work)

    def _count(self, force: bool = False) -> None:
        # What the namespace holds and has still to process, for its gauges: at most once a
        # second (five queries).
        if force or time.monotonic() - self._counted >= 1.0:
            self._counted = time.monotonic()
            safely(self._gauges)

    def _gauges(self) -> None:
        stats = self.base.stats()
        self.metrics.facts_held(self.namespace, stats)
        self.metrics.facts_backlog_now(self.namespace, stats["extraction"]["pending"], stats["unindexed"])

    async def check_health(self) -> None:
        # Serve restarts a replica whose check raises; a dead worker would strand documents.
        if not all(worker.is_alive() for _, worker in self._workers.values()):
            raise RuntimeError(f"a facts worker stopped: {self._failure!r}")

    def stop(self) -> None:
        """Tells the background workers to stop after the step under way (`close` waits)."""
        stop = getattr(self, "_stop", None)
        if stop is None:
            return
        stop.set()
        for wake, _ in self._workers.values():
            wake.set()

    def close(self, deadline: float | None = None) -> None:
        """Stops the background workers, waits for their steps under way (until the monotonic
        `deadline`, default a minute), then closes the store, once."""
        if getattr(self, "_stop", None) is None or self._closed:
            return
        self._closed = True
        self.stop()
        deadline = time.monotonic() + 60 if deadline is None else deadline
        for _, worker in self._workers.values():
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        self._threads.shutdown(wait=False)
        self.base.close()

    def __del__(self) -> None:
        self.close()  # Serve calls this on a graceful shutdown

    # -- operations that do more than one call -----------------------------------------------

    def _add_documents(self, docs: list[Any], job: str | None, index: bool) -> list[Any]:
        stored = self.base.add_documents(docs, job=job, index=index)
        for wake, _ in self._workers.values():
            wake.set()
        return stored

    def _add_facts(self, facts: list[Any]) -> list[Any]:
        ids = self.base.add_facts(facts)
        return [self.base.store.fact(i) for i in ids]

    def _neighbours(
        self,
        entity_id: str,
        depth: int,
        as_of: Any = None,
        predicates: list[str] | None = None,
        limit: int = MAX_WALK_FACTS,
    ) -> dict[str, Any]:
        store = self.base.store
        store.entity(entity_id)  # unknown: FactsNotFoundError
        # One fact more than asked for says whether there were more.
        distance, facts = store.neighbourhood(
            [entity_id], depth, as_of=as_of, predicates=predicates, max_facts=limit + 1
        )
        truncated = len(facts) > limit
        if truncated:
            facts = facts[:limit]
            ends = {entity_id} | {e for f in facts for e in (f.subject_id, f.object_id) if e}
            distance = {e: d for e, d in distance.items() if e in ends}
        entities = [{**e.model_dump(), "distance": distance[e.id]} for e in store.entities(list(distance))]
        return {"entities": entities, "facts": facts, "truncated": truncated}

    # -- the background worker ------------------------------------------------------------

    def _work(self, name: str, step: Any) -> None:
        wake = self._workers[name][0]
        while not self._stop.is_set():
            wake.clear()  # before looking: a document stored from now on wakes it again
            try:
                done = step()
            except Exception as e:  # the documents stay waiting in the store: try again later
                log.exception("facts %s step failed", name, exc_info=e)
                self._stop.wait(_RETRY_S)
                continue
            except BaseException as e:
                self._failure = e
                raise
            if done:
                self._count()  # extraction adds entities and facts
            else:
                self._count(force=True)
                wake.wait()
