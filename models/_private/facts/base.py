"""One namespace's knowledge: documents as passages in a hybrid memory, their entities and facts
in a `FactStore`, and search over passages, facts, both, or the entity graph around a query.

The store (SQLite) is the record of truth; the memory indexes what it holds (passages and fact
sentences) and is brought back in line with it when opened, so a crash between the two writes
loses nothing and revives nothing deleted.

This module holds `FactsBase` and its writes; its search (and the shapes of search results) is
in `search`, and how the memory indexes the store in `index`, both parts of the class.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, Literal

import numpy as np

from models._private.core.errors import FactsInputError, FactsNotFoundError, FactsStoreBusyError
from models._private.core.private_files import private_dir
from models._private.facts.index import DOC_PREFIX, FACT_PREFIX, FACTS_SPACE, IndexMixin
from models._private.facts.pagerank import DocumentGraph
from models._private.facts.schema import Document, DocumentIn, Entity, Fact, FactIn, FactsConfig
from models._private.facts.search import SearchMixin
from models._private.facts.spacy_extractor import CO_MENTION
from models._private.facts.store.core import READ_TIMEOUT_S, FactStore
from models._private.facts.store.rows import same_content
from models._private.memory.hybrid import HybridMemory
from models._private.memory.schema import MemoryConfig
from models._private.retrieval.embedder import Embedder

__all__ = ["FactsBase"]

log = logging.getLogger(__name__)
WRITER_WAIT_S = 120.0  # longest a store waits for the process before it to let go (a replica stopping)
_PROBE = "Ada Lovelace was born in London."  # what the extractor reads to show its service is up


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
            whose title the query writes out (`search._titled`) gains graph_weight, one about
            an entity (its title names it) that one of the best `HOP_FROM` passages names
            gains graph_weight times that passage's fused score,
            and such a best passage gains `CHAIN_SHARE` of that for the best found passage it
            names;
            "pagerank", personalised PageRank over documents and entities from the query's
            entities and the best `PAGERANK_FROM` passages lifts each document by graph_weight
            times its rank relative to the best one (`benchmarks/README.md` compares them).
        extract_max_attempts: Times a document is read alone with the extractor's service
            failing on it (while answering others) before it is marked failed.
        read_timeout_s: Longest one read of the store may take (`FactStore`).
        writer_wait_s: Longest it waits for another process holding the store (one writer a
            namespace: a replica Serve stops gracefully still works while its successor
            starts) before it raises `FactsStoreBusyError`.
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
        extract_max_attempts: int = 3,
        read_timeout_s: float = READ_TIMEOUT_S,
        writer_wait_s: float = WRITER_WAIT_S,
    ):
        private_dir(path)
        self._writer = _writer_lock(path, writer_wait_s)
        try:
            self.extract_max_attempts = extract_max_attempts
            self.namespace = namespace
            self.extractor = extractor
            self.graph_weight = graph_weight
            self.graph_rerank = graph_rerank
            # One writer or reader at a time over the store and the memory together (a search must
            # not see a document the store has and the memory lost); extraction reads text outside it.
            self._lock = threading.RLock()
            self._extracting = threading.Lock()
            self._reader: ThreadPoolExecutor | None = None  # reads a batch ahead (`extract_pending`)
            self._ahead: tuple[list[Document], Future] | None = None  # that batch, being read
            self._titles: dict[str, list[str]] | None = None  # built on the first hop search
            self._graph: DocumentGraph | None = None  # built on the first pagerank search
            self._query_vectors: OrderedDict[str, Any] = OrderedDict()  # query -> vector (`_query_vector`)
            self.store = FactStore(os.path.join(path, "facts.sqlite"), config, clock, read_timeout_s)
            memory = memory or MemoryConfig()
            embedding = memory.embedder
            if "query_threads" not in embedding.model_fields_set:
                # Searches run beside the indexer's batches, which use every core: a query on a
                # thread of its own with one torch thread is 3-5 ms faster here (EmbedderConfig).
                embedding = embedding.model_copy(update={"query_threads": 1})
            memory = memory.model_copy(update={"path": os.path.join(path, "memory"), "embedder": embedding})
            # Passages and fact sentences in memory namespaces of their own: each search asks one
            # index of one kind, with no filter to over-fetch through.
            self._spaces = {"passage": namespace, "fact": namespace + FACTS_SPACE}
            self.memory = HybridMemory(list(self._spaces.values()), memory, embedder, clock)
            self.unindexable: dict[str, str] = {}  # record id -> why the memory refused it (`_index`)
            self._reconcile()
            self._live_bytes = self._live_estimate()  # at the last compaction (or opening)
            self._compact_if_due()
        except BaseException:
            os.close(self._writer)
            raise

    def _compact_if_due(self) -> None:
        """Snapshots the memory, which empties its log and leaves no deleted text on disk, once
        records deleted or replaced since the last snapshot outnumber the live ones, or the
        log passes `compact_log_after_mb` and the live records' size at the last compaction (so
        that a memory that only grows compacts at doubling sizes: each write costs O(1) of them
        in all). Called in the lock after each write."""
        memory = self.memory
        threshold = max(self.store.config.compact_log_after_mb * 2**20, self._live_bytes)
        if memory.superseded > len(memory.records) or memory.wal.size_bytes() >= threshold:
            try:
                memory.snapshot()
            except OSError as e:  # the write is done and the log whole: try after the next one
                log.warning("facts namespace %r: compacting the memory's log failed: %r", self.namespace, e)
                return
            self._live_bytes = self._live_estimate()

    def _live_estimate(self) -> int:
        """Bytes the live records take in the log: their vectors (base64) and texts."""
        vectors = sum(v.nbytes for v in self.memory.vectors.values()) * 4 // 3
        return vectors + sum(len(r.text) for r in self.memory.records.values())

    def close(self) -> None:
        if self._reader is not None:  # a batch read ahead finishes first: it writes to the store
            self._reader.shutdown(wait=True)
        with self._lock:
            self.store.close()
            self.memory.close()
            if hasattr(self.extractor, "close"):
                self.extractor.close()
            os.close(self._writer)  # the next writer may open it

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
            self._compact_if_due()
        return stored

    def index_pending(self, limit: int = 256) -> int:
        """Indexes up to `limit` documents stored with `index=False`; returns how many.

        The passages are embedded outside the lock (the model releases the GIL, so searches
        and the extractor go on meanwhile); a document deleted by then is not indexed, nor one
        deleted and posted again with other content (that one waits for the next call).
        """
        with self._lock:
            docs = self.store.unindexed_documents(limit)
        if not docs:
            return 0
        records = [self._passage(d) for d in docs]
        vectors = self.memory.embed([r.text for r in records])
        with self._lock:
            now = {d.id: d for d in self.store.documents([d.id for d in docs])}
            keep = [i for i, d in enumerate(docs) if d.id in now and same_content(now[d.id], d)]
            # One the memory refuses is reported (`_index`) and marked too: not tried for ever.
            self._index([records[i] for i in keep], embedded=[vectors[i] for i in keep])
            self.store.mark_indexed([docs[i].id for i in keep])
            self._compact_if_due()
        return len(docs)

    def job_progress(self, job: str) -> dict[str, int]:
        """An ingest job's documents: held, indexed, and per extraction state."""
        return self.store.job_progress(job)

    def extract_pending(self, limit: int = 32, *, read_ahead: bool = False) -> int:
        """Reads up to `limit` waiting documents with the extractor; returns how many.

        Args:
            read_ahead: While this batch's entities and facts are written and their sentences
                embedded, the extractor reads the next `limit` waiting documents (on a thread
                of its own), which the next call takes: an extractor elsewhere (spaCy's
                deployment) never waits for the writes. For a caller that calls again and
                again (the shard's worker); the batches are the same, in the same order.
        """
        if self.extractor is None:
            return 0
        with self._extracting:  # one reader of the queue at a time: no document read twice
            return self._extract_pending(limit, read_ahead)

    def _extract_pending(self, limit: int, read_ahead: bool = False) -> int:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:  # read while the last batch was written
            docs, reading = ahead
            extractions, outage = reading.result()
        else:
            docs = self.store.pending_documents(limit)
            if not docs:
                return 0
            extractions, outage = self._read(docs)
        if read_ahead and outage is None:
            # The next batch: the first `limit` waiting after this one's (which wait until written).
            taken = {d.id for d in docs}
            following = [d for d in self.store.pending_documents(limit + len(docs)) if d.id not in taken]
            if following := following[:limit]:
                if self._reader is None:
                    self._reader = ThreadPoolExecutor(1, thread_name_prefix="facts-read-ahead")
                self._ahead = (following, self._reader.submit(self._read, following))
        # The fact sentences are embedded here, outside the lock: searches go on meanwhile, and
        # the extractor reads the next batch (read-ahead).
        sentences = self._embed_sentences(extractions)
        with self._lock:
            added: list[str] = []
            try:
                # One transaction for the batch (one sync to disk, not one a document), committed
                # once the facts' sentences are in the index: a document that reads done (which
                # its job's progress reads, off this lock) is one whose facts are found.
                with self.store.batch():
                    fact_ids: list[str] = []
                    for doc, extraction in zip(docs, extractions, strict=True):
                        if extraction is None:
                            continue
                        try:
                            fact_ids += self.store.add_extraction(doc.id, extraction, read=doc)
                        except FactsNotFoundError:
                            continue  # deleted while it was read (another under its id waits its turn)
                        except FactsInputError as e:
                            self.store.extraction_failed(doc.id, str(e), read=doc)
                    added = self._index_facts(fact_ids, sentences)
            except BaseException:
                # The store kept none of the batch; nor may the index: a fact it holds and the
                # store does not would dangle in searches until the namespace is opened again.
                self.memory.delete(added)
                raise
            self._changed()
            self._compact_if_due()
        if outage is not None:  # the rest wait for the service; the caller tries again later
            raise outage
        return len(docs)

    def _embed_sentences(self, extractions: list[Any]) -> dict[str, np.ndarray]:
        """The index's vectors of the sentences the facts of `extractions` would be indexed
        under (`_index_facts`; co-mention facts have none), by sentence."""
        texts = list(
            dict.fromkeys(
                f.text() for x in extractions if x is not None for f in x.facts if f.predicate != CO_MENTION
            )
        )
        return dict(zip(texts, self.memory.embed(texts), strict=True)) if texts else {}

    def _read(self, docs: list[Document]) -> tuple[list[Any], Exception | None]:
        """What the extractor reads in `docs` (None where it read nothing), and the transient
        error that stopped the reading, if the extractor's service is down.

        Documents are read in one batch, but those of a batch that failed: each of them is read
        alone, so that one document the extractor cannot read (or that breaks its service: kills
        the spaCy replica, always gets a 5xx) fails alone and the others are read. A transient
        failure on a document alone counts against it only when the extractor answered just
        before (a call or a probe), so that an outage fails no document; at
        `extract_max_attempts` the document is marked failed with the reason.
        """
        out: dict[str, Any] = {}
        suspects = self.store.extraction_suspects([d.id for d in docs])
        batch = [d for d in docs if d.id not in suspects]
        up, failure = False, None  # whether the extractor answered the last call; what it said if not
        if batch:
            try:
                read = self.extractor.extract_many([d.text for d in batch])
                out, up = dict(zip([d.id for d in batch], read, strict=True)), True
            except Exception as e:  # one of them cannot be read, or broke the service: read each alone
                up, failure = not getattr(e, "transient", False), e
                if not up:
                    self.store.suspect_extraction([d.id for d in batch])
                suspects |= {d.id for d in batch}
        for doc in (d for d in docs if d.id in suspects):
            if not up and (down := self._probe()) is not None:
                return [out.get(d.id) for d in docs], failure or down
            try:
                out[doc.id], up = self.extractor.extract(doc.text), True
            except Exception as e:
                up, failure = not getattr(e, "transient", False), e
                log.warning("extraction of document %r failed: %r", doc.id, e)
                if up:  # the extractor answered: the document's fault, it fails
                    self.store.extraction_failed(doc.id, repr(e), read=doc)
                else:
                    self.store.extraction_attempt_failed(doc.id, repr(e), self.extract_max_attempts, read=doc)
        return [out.get(d.id) for d in docs], None

    def _probe(self) -> Exception | None:
        """The transient error of the extractor reading a known text, if its service is down."""
        try:
            self.extractor.extract(_PROBE)
        except Exception as e:
            if getattr(e, "transient", False):
                return e
        return None

    def add_facts(self, facts: list[FactIn]) -> list[str]:
        """Stores facts posted with no document and indexes their sentences."""
        with self._lock:
            ids = self.store.add_facts(facts)
            self._index_facts(ids)
            self._changed()
            self._compact_if_due()
        return ids

    def delete_document(self, document_id: str) -> dict[str, Any]:
        """Deletes a document, its passage, and the facts and entities only it supported."""
        with self._lock:
            out = self.store.delete_document(document_id)
            self._changed()
            self.memory.delete([DOC_PREFIX + document_id, *(FACT_PREFIX + f for f in out["facts_removed"])])
            self._compact_if_due()
        return out

    def delete_fact(self, fact_id: str) -> None:
        with self._lock:
            self.store.delete_fact(fact_id)
            self.memory.delete([FACT_PREFIX + fact_id])
            self._changed()
            self._compact_if_due()

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
            self._compact_if_due()
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
            "unindexable": len(self.unindexable),  # rows the index refused since opening (logged)
        }


def _writer_lock(path: str, wait_s: float) -> int:
    """An exclusive lock on the store at `path` (a descriptor holding `flock` on its `.writer`
    file), waited for up to `wait_s`. The kernel lets go of it when its process dies.

    Raises:
        FactsStoreBusyError: another process still holds it after `wait_s`.
    """
    fd = os.open(os.path.join(path, ".writer"), os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise FactsStoreBusyError(path, wait_s) from None
            time.sleep(0.1)
