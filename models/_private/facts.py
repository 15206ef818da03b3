"""One namespace's knowledge: documents as passages in a hybrid memory, their entities and facts
in a `FactStore`, and search over passages, facts, both, or the entity graph around a query.

The store (SQLite) is the record of truth; the memory indexes what it holds (passages and fact
sentences) and is brought back in line with it when opened, so a crash between the two writes
loses nothing and revives nothing deleted.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, Field

from models._private.core.errors import FactsInputError, FactsNotFoundError
from models._private.embedder import Embedder
from models._private.facts_extract import CO_MENTION
from models._private.facts_resolution import normalise
from models._private.facts_schema import Document, DocumentIn, Entity, Fact, FactIn, FactsConfig
from models._private.facts_store import FactStore
from models._private.memory import HybridMemory
from models._private.memory_schema import MemoryConfig, Record

__all__ = ["FactHit", "FactsBase", "PassageHit", "SearchResult"]

log = logging.getLogger(__name__)

SearchMode = Literal["passages", "facts", "hybrid", "graph"]
_DOC, _FACT = "doc:", "fact:"
MAX_K = 100
HOP_FROM = 3  # the best passages whose entities graph mode ("hop") follows
_QUALIFIER = re.compile(r"\s*\([^)]*\)\s*$")  # "Kiss and Tell (1945 film)" is about "Kiss and Tell"
MAX_DEPTH = 3


class PassageHit(BaseModel):
    """A document that answers a query, with the scores that placed it."""

    document_id: str
    title: str
    text: str
    score: float
    scores: dict[str, float] = Field(description="fused, and graph (the bonus of its distance)")
    distance: int | None = Field(None, description="Facts between it and the query's entities.")


class FactHit(BaseModel):
    """A fact that answers a query, with the scores that placed it."""

    fact: Fact
    score: float
    scores: dict[str, float]
    distance: int | None = None


class SearchResult(BaseModel):
    """Passages, facts, and (in graph mode) the entities that link them to the query's."""

    passages: list[PassageHit] = Field(default_factory=list)
    facts: list[FactHit] = Field(default_factory=list)
    entities: list[Entity] = Field(default_factory=list)
    seeds: list[str] = Field(default_factory=list, description="Ids of the entities the query named.")


class FactsBase:
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
            `HOP_FROM` passages names gains graph_weight (times that passage's fused score).
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
        graph_rerank: Literal["distance", "hop"] = "hop",
        clock: Any = time.time,
    ):
        os.makedirs(path, exist_ok=True)
        self.namespace = namespace
        self.extractor = extractor
        self.graph_weight = graph_weight
        self.graph_rerank = graph_rerank
        # One writer or reader at a time over the store and the memory together (a search must
        # not see a document the store has and the memory lost); extraction reads text outside it.
        self._lock = threading.RLock()
        self._extracting = threading.Lock()
        self._titles: dict[str, list[str]] | None = None  # built on the first hop search
        self.store = FactStore(os.path.join(path, "facts.sqlite"), config, clock)
        memory = (memory or MemoryConfig()).model_copy(update={"path": os.path.join(path, "memory")})
        self.memory = HybridMemory([namespace], memory, embedder, clock)
        self._reconcile()

    def close(self) -> None:
        with self._lock:
            self.store.close()
            self.memory.close()

    # -- writes ---------------------------------------------------------------------------

    def add_document(self, doc: DocumentIn) -> Document:
        """Stores a document and indexes it as a passage at once; its entities and facts come
        when `extract_pending` reads it (if there is an extractor)."""
        return self.add_documents([doc])[0]

    def add_documents(self, docs: list[DocumentIn]) -> list[Document]:
        """`add_document` for a batch: one transaction, one embedding batch.

        Raises:
            FactsInputError: a text longer than the memory indexes (`MemoryConfig.max_text_chars`,
                which caps the store's own limit); nothing is stored.
        """
        limit = self.memory.config.max_text_chars
        for i, d in enumerate(docs):
            if len(d.title) + 1 + len(d.text) > limit:
                raise FactsInputError(f"documents.{i}.text", f"{len(d.text)} characters; at most {limit}")
        with self._lock:
            stored = self.store.add_documents(docs, pending=self.extractor is not None)
            self._titles = None
            self.memory.upsert([self._passage(d) for d in stored])
        return stored

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
        except Exception:  # one document the extractor cannot read: find it, read the rest
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
            self._index_facts(fact_ids)  # one embedding batch and one log write for the lot
        return len(docs)

    def _extract_one(self, doc: Document) -> Any:
        try:
            return self.extractor.extract(doc.text)
        except Exception as e:
            log.warning("extraction of document %r failed: %r", doc.id, e)
            self.store.extraction_failed(doc.id, repr(e))
            return None

    def add_facts(self, facts: list[FactIn]) -> list[str]:
        """Stores facts posted with no document and indexes their sentences."""
        with self._lock:
            ids = self.store.add_facts(facts)
            self._index_facts(ids)
        return ids

    def delete_document(self, document_id: str) -> dict[str, Any]:
        """Deletes a document, its passage, and the facts and entities only it supported."""
        with self._lock:
            out = self.store.delete_document(document_id)
            self._titles = None
            self.memory.delete([_DOC + document_id, *(_FACT + f for f in out["facts_removed"])])
        return out

    def delete_fact(self, fact_id: str) -> None:
        with self._lock:
            self.store.delete_fact(fact_id)
            self.memory.delete([_FACT + fact_id])

    # -- search ---------------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int = 10,
        mode: SearchMode = "hybrid",
        *,
        as_of: datetime | None = None,
        depth: int = 1,
    ) -> SearchResult:
        """The best passages and/or facts for `query`; in graph mode also the entities the
        query names, their neighbourhood to `depth`, and a rerank that favours what lies near
        them.

        Raises:
            FactsInputError: an empty query, `k` or `depth` out of bounds, an unknown mode.
        """
        if not query.strip():
            raise FactsInputError("query", "is empty")
        if not 1 <= k <= MAX_K:
            raise FactsInputError("k", f"must be 1 to {MAX_K}, got {k}")
        if not 0 <= depth <= MAX_DEPTH:
            raise FactsInputError("depth", f"must be 0 to {MAX_DEPTH}, got {depth}")
        if mode not in ("passages", "facts", "hybrid", "graph"):
            raise FactsInputError("mode", f"must be passages, facts, hybrid or graph, got {mode!r}")
        with self._lock:
            return self._search(query, k, mode, as_of, depth)

    def _search(self, query: str, k: int, mode: str, as_of: datetime | None, depth: int) -> SearchResult:
        distance: dict[str, int] = {}
        seeds: list[str] = []
        if mode == "graph":
            seeds = self._seeds(query)
            distance, _ = self.store.neighbourhood(seeds, depth, as_of=as_of)
        result = SearchResult(seeds=seeds)
        vector = self.memory.embedder.encode([query])[0]  # one encoding for passages and facts
        if mode in ("passages", "hybrid", "graph"):
            result.passages = self._passages(query, vector, k, as_of, distance, mode == "graph")
        if mode in ("facts", "hybrid", "graph"):
            result.facts = self._facts(query, vector, k, as_of, distance)
        if mode == "graph":
            linked = set(seeds) | {
                e for h in result.facts for e in (h.fact.subject_id, h.fact.object_id) if e
            }
            result.entities = [self.store.entity(e) for e in linked if e in distance]
        return result

    def _seeds(self, query: str) -> list[str]:
        seeds = dict.fromkeys(self.store.match_names(query))
        if self.extractor is not None:
            for mention in self.extractor.extract(query).entities:
                for entity in self.store.find_entity(mention.name, mention.type):
                    seeds.setdefault(entity.id)
        return list(seeds)

    def _candidates(self, query: str, vector: Any, kind: str, k: int) -> list[Any]:
        return self.memory.search(query, max(5 * k, 50), filter={"kind": kind}, vector=vector)

    def _passages(
        self, query: str, vector: Any, k: int, as_of: datetime | None, distance: dict[str, int], graph: bool
    ) -> list[PassageHit]:
        candidates = self._candidates(query, vector, "passage", k)
        base = {h.record.metadata["document_id"]: h.score for h in candidates}
        near: dict[str, tuple[int, float]] = {}  # document -> (distance, bonus)
        if graph and self.graph_rerank == "hop":
            near = self._hops(base, [e for e, d in distance.items() if d == 0])
        elif graph and distance:
            for document_id, entities in self.store.documents_mentioning(list(distance)).items():
                d = min(distance[e] for e in entities)
                near[document_id] = (d, self.graph_weight / (1 + d))
        hits = []
        for document_id in set(base) | set(near):
            doc = self.store.document(document_id)
            if as_of is not None and doc.reference_time is not None and doc.reference_time > as_of:
                continue
            d, bonus = near.get(document_id, (None, 0.0))
            fused = base.get(document_id, 0.0)
            hits.append(
                PassageHit(
                    document_id=doc.id,
                    title=doc.title,
                    text=doc.text,
                    score=fused + bonus,
                    scores={"fused": fused, "graph": bonus},
                    distance=d,
                )
            )
        return sorted(hits, key=lambda h: -h.score)[:k]

    def _hops(self, base: dict[str, float], seeds: list[str]) -> dict[str, tuple[int, float]]:
        """Documents about the query's entities (distance 0) and about the entities the best
        passages name (distance 1), with their bonus."""
        about = self._about()
        near: dict[str, tuple[int, float]] = {}

        def lift(name: str, distance: int, bonus: float, source: str | None) -> None:
            for document_id in about.get(normalise(name), ()):
                if document_id != source and bonus > near.get(document_id, (0, 0.0))[1]:
                    near[document_id] = (distance, bonus)

        for entity_id in seeds:
            lift(self.store.entity(entity_id).name, 0, self.graph_weight, None)
        for source in sorted(base, key=lambda d: -base[d])[:HOP_FROM]:
            for _, name in self.store.entities_mentioned(source):
                lift(name, 1, self.graph_weight * base[source], source)
        return near

    def _about(self) -> dict[str, list[str]]:
        """Normalised title (without a parenthesised qualifier) -> ids of documents with it."""
        if self._titles is None:
            self._titles = {}
            for document_id, title in self.store.titles():
                self._titles.setdefault(normalise(_QUALIFIER.sub("", title)), []).append(document_id)
        return self._titles

    def _facts(
        self, query: str, vector: Any, k: int, as_of: datetime | None, distance: dict[str, int]
    ) -> list[FactHit]:
        when = as_of or datetime.fromtimestamp(self.store.clock(), tz=timezone.utc)
        hits = []
        for h in self._candidates(query, vector, "fact", k):
            fact = self.store.fact(h.record.id.removeprefix(_FACT))
            if not _held(fact, when):
                continue
            ends = [distance[e] for e in (fact.subject_id, fact.object_id) if e in distance]
            d = min(ends) if ends else None
            bonus = self.graph_weight / (1 + d) if d is not None else 0.0
            hits.append(
                FactHit(
                    fact=fact, score=h.score + bonus, scores={"fused": h.score, "graph": bonus}, distance=d
                )
            )
        return sorted(hits, key=lambda h: -h.score)[:k]

    # -- the index follows the store --------------------------------------------------------

    def _passage(self, doc: Document) -> Record:
        text = f"{doc.title}\n{doc.text}" if doc.title else doc.text
        return Record(
            id=_DOC + doc.id,
            namespace=self.namespace,
            text=text,
            metadata={"kind": "passage", "document_id": doc.id},
        )

    def _index_facts(self, fact_ids: Any) -> None:
        records = []
        for fact_id in dict.fromkeys(fact_ids):
            fact = self.store.fact(fact_id)
            if fact.predicate == CO_MENTION:  # an edge for the graph, not a statement to find
                continue
            records.append(
                Record(
                    id=_FACT + fact.id,
                    namespace=self.namespace,
                    text=fact.sentence,
                    metadata={"kind": "fact", "fact_id": fact.id},
                )
            )
        if records:
            self.memory.upsert(records)

    def _reconcile(self) -> None:
        """Indexes what the store holds and the memory lacks, and drops what the store no
        longer holds (a crash may have come between the two writes)."""
        indexed = set(self.memory.records)
        # Co-mention facts are never indexed: they are neither stale records nor gaps.
        documents, facts = self.store.document_ids(), self.store.fact_ids(except_predicate=CO_MENTION)
        stale = [
            rid
            for rid in indexed
            if (rid.startswith(_DOC) and rid.removeprefix(_DOC) not in documents)
            or (rid.startswith(_FACT) and rid.removeprefix(_FACT) not in facts)
        ]
        if stale:
            self.memory.delete(stale)
        missing = [d for d in documents if _DOC + d not in indexed]
        if missing:
            self.memory.upsert([self._passage(self.store.document(d)) for d in missing])
        self._index_facts(f for f in facts if _FACT + f not in indexed)


def _held(fact: Fact, when: datetime) -> bool:
    return (fact.valid_at is None or fact.valid_at <= when) and (
        fact.invalid_at is None or fact.invalid_at > when
    )
