"""One namespace's knowledge: documents as passages in a hybrid memory, their entities and facts
in a `FactStore`, and search over passages, facts, both, or the entity graph around a query.

The store (SQLite) is the record of truth; the memory indexes what it holds (passages and fact
sentences) and is brought back in line with it when opened, so a crash between the two writes
loses nothing and revives nothing deleted.

This module holds `FactsBase` and its writes; its search (and the shapes of search results) is
in `search`, and how the memory indexes the store in `index`, both parts of the class.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime
from typing import Any, Literal

from models._private.core.errors import FactsInputError, FactsNotFoundError
from models._private.core.private_files import private_dir
from models._private.facts.index import DOC_PREFIX, FACT_PREFIX, FACTS_SPACE, IndexMixin
from models._private.facts.pagerank import DocumentGraph
from models._private.facts.schema import Document, DocumentIn, Entity, Fact, FactIn, FactsConfig
from models._private.facts.search import SearchMixin
from models._private.facts.store.core import FactStore
from models._private.memory.hybrid import HybridMemory
from models._private.memory.schema import MemoryConfig
from models._private.retrieval.embedder import Embedder

__all__ = ["FactsBase"]

log = logging.getLogger(__name__)


class FactsBase(SearchMixin, IndexMixin):
    """Documents, entities and facts of one namespace, searchable.

    Args:
        path: A directory for the store and the memory's log (made if missing).
        namespace: The memory namespace passages and facts are indexed in.
        config: Functional predicates and resolution thresholds.
        memory: The hybrid memory's settings (its `path` is set here).
        embedder: A shared embedder; built from `memory.embedder` when None.
        extractor: Reads entities and facts from documents (`SpacyExtractor`); None takes
            only facts posted explicitly.
        graph_weight: Score a passage or fact at distance 0 from the query's entities gains in
            graph mode (distance d gains graph_weight / (1 + d)).
        graph_rerank: How graph mode lifts passages: "distance", every document that mentions
            an entity d facts from the query's gains graph_weight / (1 + d); "hop", a document
            about an entity (its title names it) that the query or one of the best
            `HOP_FROM` passages names gains graph_weight (times that passage's fused score),
            and such a best passage gains `CHAIN_SHARE` of that for the best found passage it
            names;
            "pagerank", personalised PageRank over documents and entities from the query's
            entities and the best `HOP_FROM` passages lifts each document by graph_weight
            times its rank relative to the best one (`benchmarks/README.md` compares them).
    """

    def __init__(
        self,
        path: str,
        namespace: str = "facts",
        config: FactsConfig | None = None,
        memory: MemoryConfig | None = None,
        embedder: Embedder | None = None,
        extractor: Any = None,
        graph_weight: float = 0.6,
        graph_rerank: Literal["distance", "hop", "pagerank"] = "hop",
        clock: Any = time.time,
    ):
        private_dir(path)
        self.namespace = namespace
        self.extractor = extractor
        self.graph_weight = graph_weight
        self.graph_rerank = graph_rerank
        # One writer or reader at a time over the store and the memory together (a search must
        # not see a document the store has and the memory lost); extraction reads text outside it.
        self._lock = threading.RLock()
        self._extracting = threading.Lock()
        self._titles: dict[str, list[str]] | None = None  # built on the first hop search
        self._graph: DocumentGraph | None = None  # built on the first pagerank search
        self.store = FactStore(os.path.join(path, "facts.sqlite"), config, clock)
        memory = (memory or MemoryConfig()).model_copy(update={"path": os.path.join(path, "memory")})
        # Passages and fact sentences in memory namespaces of their own: each search asks one
        # index of one kind, with no filter to over-fetch through.
        self._spaces = {"passage": namespace, "fact": namespace + FACTS_SPACE}
        self.memory = HybridMemory(list(self._spaces.values()), memory, embedder, clock)
        self._reconcile()

    def close(self) -> None:
        with self._lock:
            self.store.close()
            self.memory.close()
            if hasattr(self.extractor, "close"):
                self.extractor.close()

    # -- writes ---------------------------------------------------------------------------

    def add_document(self, doc: DocumentIn) -> Document:
        """Stores a document and indexes it as a passage at once; its entities and facts come
        when `extract_pending` reads it (if there is an extractor)."""
        return self.add_documents([doc])[0]

    def add_documents(
        self, docs: list[DocumentIn], *, job: str | None = None, index: bool = True
    ) -> list[Document]:
        """`add_document` for a batch: one transaction, one embedding batch.

        Args:
            job: The ingest job the documents belong to (`job_progress`).
            index: False stores the batch only (fast: one transaction) and leaves its passages
                to `index_pending`; they are searchable once it has run.

        Raises:
            FactsInputError: a text longer than the memory indexes (`MemoryConfig.max_text_chars`,
                which caps the store's own limit); nothing is stored.
        """
        limit = self.memory.config.max_text_chars
        for i, d in enumerate(docs):
            if len(d.title) + 1 + len(d.text) > limit:
                raise FactsInputError(f"documents.{i}.text", f"{len(d.text)} characters; at most {limit}")
        with self._lock:
            pending = self.extractor is not None
            stored = self.store.add_documents(docs, pending=pending, job=job, indexed=index)
            self._changed()
            if index:
                self.memory.upsert([self._passage(d) for d in stored])
        return stored

    def index_pending(self, limit: int = 256) -> int:
        """Indexes up to `limit` documents stored with `index=False`; returns how many.

        The passages are embedded outside the lock (the model releases the GIL, so searches
        and the extractor go on meanwhile); a document deleted by then is not indexed.
        """
        with self._lock:
            docs = self.store.unindexed_documents(limit)
        if not docs:
            return 0
        records = [self._passage(d) for d in docs]
        vectors = self.memory.embed([r.text for r in records])
        with self._lock:
            alive = {d.id for d in self.store.documents([d.id for d in docs])}
            keep = [i for i, d in enumerate(docs) if d.id in alive]
            self.memory.upsert([records[i] for i in keep], embedded=[vectors[i] for i in keep])
            self.store.mark_indexed([docs[i].id for i in keep])
        return len(docs)

    def job_progress(self, job: str) -> dict[str, int]:
        """An ingest job's documents: held, indexed, and per extraction state."""
        return self.store.job_progress(job)

    def extract_pending(self, limit: int = 32) -> int:
        """Reads up to `limit` waiting documents with the extractor; returns how many."""
        if self.extractor is None:
            return 0
        with self._extracting:  # one reader of the queue at a time: no document read twice
            return self._extract_pending(limit)

    def _extract_pending(self, limit: int) -> int:
        docs = self.store.pending_documents(limit)
        if not docs:
            return 0
        try:
            extractions = self.extractor.extract_many([d.text for d in docs])
        except Exception as e:  # one document the extractor cannot read: find it, read the rest
            if getattr(e, "transient", False):  # the extractor's service fails: all wait
                raise
            extractions = [self._extract_one(d) for d in docs]
        fact_ids: list[str] = []
        with self._lock:
            for doc, extraction in zip(docs, extractions, strict=True):
                if extraction is None:
                    continue
                try:
                    fact_ids += self.store.add_extraction(doc.id, extraction)
                except FactsNotFoundError:
                    continue  # deleted while it was read
                except FactsInputError as e:
                    self.store.extraction_failed(doc.id, str(e))
            # In the lock, so that a document read is one whose facts are found: a short
            # batch of sentences (passages, the long texts, are embedded outside it).
            self._index_facts(fact_ids)
            self._changed()
        return len(docs)

    def _extract_one(self, doc: Document) -> Any:
        try:
            return self.extractor.extract(doc.text)
        except Exception as e:
            if getattr(e, "transient", False):  # the document waits; the caller tries again later
                raise
            log.warning("extraction of document %r failed: %r", doc.id, e)
            self.store.extraction_failed(doc.id, repr(e))
            return None

    def add_facts(self, facts: list[FactIn]) -> list[str]:
        """Stores facts posted with no document and indexes their sentences."""
        with self._lock:
            ids = self.store.add_facts(facts)
            self._index_facts(ids)
            self._changed()
        return ids

    def delete_document(self, document_id: str) -> dict[str, Any]:
        """Deletes a document, its passage, and the facts and entities only it supported."""
        with self._lock:
            out = self.store.delete_document(document_id)
            self._changed()
            self.memory.delete([DOC_PREFIX + document_id, *(FACT_PREFIX + f for f in out["facts_removed"])])
        return out

    def delete_fact(self, fact_id: str) -> None:
        with self._lock:
            self.store.delete_fact(fact_id)
            self.memory.delete([FACT_PREFIX + fact_id])
            self._changed()

    def merge_entities(self, keep_id: str, other_id: str) -> Entity:
        """Makes `other_id` part of `keep_id` (`FactStore.merge_entities`); facts that became
        one leave the index with their duplicates."""
        with self._lock:
            before = {
                f.id for e in (keep_id, other_id) for f in self.store.facts(entity_id=e, include_history=True)
            }
            entity = self.store.merge_entities(keep_id, other_id)
            self.memory.delete([FACT_PREFIX + f for f in before - self.store.fact_ids()])
            self._changed()
        return entity

    def split_entity(self, entity_id: str, document_ids: list[str], name: str | None) -> Entity:
        """Moves what `document_ids` say of an entity to a new one (`FactStore.split_entity`)."""
        with self._lock:
            self._changed()
            return self.store.split_entity(entity_id, document_ids, name)

    def invalidate_fact(self, fact_id: str, invalid_at: datetime | None = None) -> Fact:
        """Marks a fact as no longer holding from `invalid_at` (default now); it stays in history."""
        with self._lock:
            self._changed()
            return self.store.invalidate_fact(fact_id, invalid_at)

    def stats(self) -> dict[str, Any]:
        """How much the namespace holds, and how far indexing and extraction are."""
        return {
            "namespace": self.namespace,
            **self.store.stats(),
            "unindexed": len(self.store.document_ids(indexed=False)),
            "extraction": self.store.extraction_progress(),
        }
