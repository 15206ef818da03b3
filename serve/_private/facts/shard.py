"""One namespace of the facts service: a Serve deployment of one replica (a Ray actor that Serve
restarts when it dies) holding the namespace's `FactsBase`, with background workers that index
stored documents and read them with the extractor."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

from ray.exceptions import RayTaskError

from models._private.core.errors import ExtractorUnreachableError, FactsInputError
from models._private.core.metrics import safely
from models._private.core.retry import unwrap_error
from models._private.facts.base import FactsBase
from serve._private.facts.config import FactsNamespaceConfig
from serve._private.metrics import service_metrics

__all__ = ["ExtractorServer", "FactsShard", "RemoteExtractor"]

log = logging.getLogger("swarmray.serve.facts")
_INDEX_BATCH = 256  # passages embedded per background step (fewer, longer batches pad less)
_RETRY_S = 5.0  # pause after a background step failed, before trying again
_WRITES = {
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
    """The facts of one namespace, behind `run(operation, ...)`.

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
        )
        store = self.base.store
        self.namespace, self.metrics, self._counted = namespace, service_metrics(system, "facts"), 0.0
        self._count(force=True)
        # What the ingress may ask; every call runs in a thread (the base serialises what must be).
        self._operations = {
            "add_documents": self._add_documents,
            "job": self.base.job_progress,
            "document": store.document,
            "delete_document": self.base.delete_document,
            "add_facts": self._add_facts,
            "fact": store.fact,
            "facts": store.facts,
            "invalidate_fact": self.base.invalidate_fact,
            "delete_fact": self.base.delete_fact,
            "entity": store.entity,
            "find_entity": store.find_entity,
            "neighbours": self._neighbours,
            "path": store.path,
            "merge_entities": self.base.merge_entities,
            "split_entity": self.base.split_entity,
            "search": self.base.search,
            "stats": self.base.stats,
        }
        # Two workers, so that the embedder (which releases the GIL) indexes while spaCy parses.
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._workers = {
            name: (threading.Event(), threading.Thread(target=self._work, args=(name, step), daemon=True))
            for name, step in (
                ("index", lambda: self.base.index_pending(_INDEX_BATCH)),
                ("extract", lambda: self.base.extract_pending(self.config.extract_batch)),
            )
        }
        for wake, worker in self._workers.values():
            wake.set()  # documents left waiting by an earlier replica go first
            worker.start()

    async def run(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        """`operation` (a key of the table above) with its arguments, off the event loop."""
        with self.metrics.facts_operation(self.namespace, operation):
            out = await asyncio.to_thread(self._operations[operation], *args, **kwargs)
        if operation in _WRITES:
            await asyncio.to_thread(self._count)
        return out

    def _count(self, force: bool = False) -> None:
        # What the namespace holds, for its gauge: at most once a second (three COUNTs).
        if force or time.monotonic() - self._counted >= 1.0:
            self._counted = time.monotonic()
            safely(lambda: self.metrics.facts_held(self.namespace, self.base.store.stats()))

    async def check_health(self) -> None:
        # Serve restarts a replica whose check raises; a dead worker would strand documents.
        if not all(worker.is_alive() for _, worker in self._workers.values()):
            raise RuntimeError(f"a facts worker stopped: {self._failure!r}")

    def __del__(self) -> None:
        # Serve calls this on a graceful shutdown: finish the step under way, then close.
        stop = getattr(self, "_stop", None)
        if stop is None:
            return
        stop.set()
        for wake, worker in self._workers.values():
            wake.set()
            worker.join(timeout=60)
        self.base.close()

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
        self, entity_id: str, depth: int, as_of: Any = None, predicates: list[str] | None = None
    ) -> dict[str, Any]:
        store = self.base.store
        store.entity(entity_id)  # unknown: FactsNotFoundError
        distance, facts = store.neighbourhood([entity_id], depth, as_of=as_of, predicates=predicates)
        entities = [{**store.entity(e).model_dump(), "distance": d} for e, d in distance.items()]
        return {"entities": entities, "facts": facts}

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
