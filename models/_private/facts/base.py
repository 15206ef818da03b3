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
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, Field

from models._private.core.errors import FactsInputError, FactsNotFoundError, MemoryInputError
from models._private.facts.pagerank import DocumentGraph
from models._private.facts.resolution import normalise
from models._private.facts.schema import Document, DocumentIn, Entity, Fact, FactIn, FactsConfig
from models._private.facts.spacy_extractor import CO_MENTION
from models._private.facts.store.core import FactStore
from models._private.memory.filters import compile_filter
from models._private.memory.hybrid import HybridMemory
from models._private.memory.schema import MemoryConfig, Record
from models._private.retrieval.embedder import Embedder

__all__ = ["FactHit", "FactsBase", "PassageHit", "SearchResult"]

log = logging.getLogger(__name__)

SearchMode = Literal["passages", "facts", "hybrid", "graph"]
_DOC, _FACT = "doc:", "fact:"
_FACTS_SPACE = "/facts"  # suffix of the memory namespace of fact sentences
_META = "meta."  # a document's metadata keys in its passage record (beside document_id, source)
MAX_K = 100
HOP_FROM = 3  # the best passages whose entities graph mode ("hop", "pagerank") follows
CHAIN_SHARE = 0.5  # of the hop bonus, what a best passage gains for naming another found one
PAGERANK_DOCUMENTS = 50  # documents the pagerank rerank lifts, by rank
_QUALIFIER = re.compile(r"\s*\([^)]*\)\s*$")  # "Kiss and Tell (1945 film)" is about "Kiss and Tell"
MAX_DEPTH = 3


class PassageHit(BaseModel):
    """A document that answers a query, with the scores that placed it."""

    namespace: str
    document_id: str
    title: str
    text: str
    score: float
    scores: dict[str, float] = Field(description="fused, and graph (the bonus of its distance)")
    distance: int | None = Field(None, description="Facts between it and the query's entities.")


class FactHit(BaseModel):
    """A fact that answers a query, with the scores that placed it."""

    namespace: str
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
        self._graph: DocumentGraph | None = None  # built on the first pagerank search
        self.store = FactStore(os.path.join(path, "facts.sqlite"), config, clock)
        memory = (memory or MemoryConfig()).model_copy(update={"path": os.path.join(path, "memory")})
        # Passages and fact sentences in memory namespaces of their own: each search asks one
        # index of one kind, with no filter to over-fetch through.
        self._spaces = {"passage": namespace, "fact": namespace + _FACTS_SPACE}
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
            self.memory.delete([_DOC + document_id, *(_FACT + f for f in out["facts_removed"])])
        return out

    def delete_fact(self, fact_id: str) -> None:
        with self._lock:
            self.store.delete_fact(fact_id)
            self.memory.delete([_FACT + fact_id])
            self._changed()

    def merge_entities(self, keep_id: str, other_id: str) -> Entity:
        """Makes `other_id` part of `keep_id` (`FactStore.merge_entities`); facts that became
        one leave the index with their duplicates."""
        with self._lock:
            before = {
                f.id for e in (keep_id, other_id) for f in self.store.facts(entity_id=e, include_history=True)
            }
            entity = self.store.merge_entities(keep_id, other_id)
            self.memory.delete([_FACT + f for f in before - self.store.fact_ids()])
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

    # -- search ---------------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int = 10,
        mode: SearchMode = "hybrid",
        *,
        as_of: datetime | None = None,
        depth: int = 1,
        filters: dict[str, Any] | None = None,
    ) -> SearchResult:
        """The best passages and/or facts for `query`; in graph mode also the entities the
        query names, their neighbourhood to `depth`, and a rerank that favours what lies near
        them.

        Args:
            as_of: Read the world as it was then: facts that held, documents from before.
            filters: Conditions on documents, in the memory's filter language (`{"field":
                value | {"$op": operand}}`) over `source` and the keys of their `metadata`.
                Passages must pass; facts must have been read from a document that passes
                (facts posted with no document pass no filter).

        Raises:
            FactsInputError: an empty query, `k` or `depth` out of bounds, an unknown mode, a
                malformed filter.
        """
        if not query.strip():
            raise FactsInputError("query", "is empty")
        if not 1 <= k <= MAX_K:
            raise FactsInputError("k", f"must be 1 to {MAX_K}, got {k}")
        if not 0 <= depth <= MAX_DEPTH:
            raise FactsInputError("depth", f"must be 0 to {MAX_DEPTH}, got {depth}")
        if mode not in ("passages", "facts", "hybrid", "graph"):
            raise FactsInputError("mode", f"must be passages, facts, hybrid or graph, got {mode!r}")
        try:
            where = {_META + key if key != "source" else key: v for key, v in (filters or {}).items()}
            keep = compile_filter(where)
        except MemoryInputError as e:
            field = e.field.replace("filter", "filters", 1).replace(_META, "")
            raise FactsInputError(field, e.reason) from None
        with self._lock:
            return self._search(query, k, mode, as_of, depth, Filter(where, keep) if filters else None)

    def _search(
        self, query: str, k: int, mode: str, as_of: datetime | None, depth: int, where: Filter | None
    ) -> SearchResult:
        vector = self.memory.embedder.encode([query])[0]  # one encoding for passages and facts
        distance: dict[str, int] = {}
        seeds: list[str] = []
        if mode == "graph":
            seeds = self._seeds(query)
            distance, _ = self.store.neighbourhood(seeds, depth, as_of=as_of, with_facts=False)
        result = SearchResult(seeds=seeds)
        if mode in ("passages", "hybrid", "graph"):
            result.passages = self._passages(query, vector, k, as_of, distance, mode == "graph", where)
        if mode in ("facts", "hybrid", "graph"):
            result.facts = self._facts(query, vector, k, as_of, distance, where)
        if mode == "graph":
            linked = set(seeds) | {
                e for h in result.facts for e in (h.fact.subject_id, h.fact.object_id) if e
            }
            result.entities = [self.store.entity(e) for e in linked if e in distance]
        return result

    def _seeds(self, query: str) -> list[str]:
        """Entities the query names: known names and aliases word for word; when there are
        none, the names NER reads in it, resolved as a document's would be (fuzzily)."""
        seeds = dict.fromkeys(self.store.match_names(query))
        # NER costs 4.5 ms a query and, where a name matched, added no recall on HotpotQA's dev
        # split (benchmarks/README.md, facts).
        if not seeds and hasattr(self.extractor, "mentions"):  # an offline reader, not a model
            for mention in self.extractor.mentions(query):
                for entity in self.store.find_entity(mention.name, mention.type):
                    seeds.setdefault(entity.id)
        return list(seeds)

    def _candidates(self, query: str, vector: Any, kind: str, k: int, where: dict[str, Any]) -> list[Any]:
        return self.memory.search(
            query, max(5 * k, 50), filter=where or None, namespaces=[self._spaces[kind]], vector=vector
        )

    def _passages(
        self,
        query: str,
        vector: Any,
        k: int,
        as_of: datetime | None,
        distance: dict[str, int],
        graph: bool,
        where: Filter | None,
    ) -> list[PassageHit]:
        candidates = self._candidates(query, vector, "passage", k, where.spec if where else {})
        base = {h.record.metadata["document_id"]: h.score for h in candidates}
        near: dict[str, tuple[int, float]] = {}  # document -> (distance, bonus)
        if graph and self.graph_rerank == "hop":
            near = self._hops(base, [e for e, d in distance.items() if d == 0])
        elif graph and self.graph_rerank == "pagerank":
            near = self._pagerank(base, [e for e, d in distance.items() if d == 0])
        elif graph and distance:
            for document_id, entities in self.store.documents_mentioning(list(distance)).items():
                d = min(distance[e] for e in entities)
                near[document_id] = (d, self.graph_weight / (1 + d))
        hits = []
        for doc in self.store.documents(list(set(base) | set(near))):
            document_id = doc.id
            if as_of is not None and doc.reference_time is not None and doc.reference_time > as_of:
                continue
            if where is not None and not where.keep(_filterable(doc)):  # a lifted document
                continue
            d, bonus = near.get(document_id, (None, 0.0))
            fused = base.get(document_id, 0.0)
            hits.append(
                PassageHit(
                    namespace=self.namespace,
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
        """Documents about the query's entities (distance 0), about the entities the best
        passages name (distance 1), and those best passages that name another found passage
        (a chain's first hop), with their bonus."""
        about = self._about()
        near: dict[str, tuple[int, float]] = {}

        def lift(name: str, distance: int, bonus: float, source: str | None) -> list[str]:
            named = [d for d in about.get(normalise(name), ()) if d != source]
            for document_id in named:
                if bonus > near.get(document_id, (0, 0.0))[1]:
                    near[document_id] = (distance, bonus)
            return named

        for entity_id in seeds:
            lift(self.store.entity(entity_id).name, 0, self.graph_weight, None)
        best = sorted(base, key=lambda d: -base[d])[:HOP_FROM]
        chains: dict[str, float] = {}  # a best passage -> the best fused score of one it names
        for doc in self.store.documents(best):
            source = doc.id
            names = [name for _, name in self.store.entities_mentioned(source)]
            # Titles the passage writes out, capitalised, whether or not NER caught them.
            for name in dict.fromkeys([*names, *_titled(doc.text, about)]):
                for target in lift(name, 1, self.graph_weight * base[source], source):
                    chains[source] = max(chains.get(source, 0.0), base.get(target, 0.0))
        # The first hop of a chain gains too: a best passage that names another found passage
        # is likelier the question's first hop (dev R@2 0.715 -> 0.735; benchmarks/README.md).
        for source, score in chains.items():
            bonus = self.graph_weight * CHAIN_SHARE * score
            if bonus > near.get(source, (1, 0.0))[1]:
                near[source] = (near.get(source, (1, 0.0))[0], bonus)
        return near

    def _pagerank(self, base: dict[str, float], seeds: list[str]) -> dict[str, tuple[int | None, float]]:
        """Documents the walk from the query's entities and the best passages reaches most,
        with a bonus of `graph_weight` times their share of the best document's rank."""
        if self._graph is None:
            self._graph = DocumentGraph(*self.store.graph_edges())
        best = {d: base[d] for d in sorted(base, key=lambda d: -base[d])[:HOP_FROM]}
        ranks = self._graph.rank(dict.fromkeys(seeds, 1.0), best)
        top = sorted(ranks, key=lambda d: -ranks[d])[:PAGERANK_DOCUMENTS]
        return {d: (None, self.graph_weight * ranks[d] / ranks[top[0]]) for d in top}

    def _changed(self) -> None:
        """Forgets what graph search built from the store (a write changed it)."""
        self._titles = self._graph = None

    def _about(self) -> dict[str, list[str]]:
        """Normalised title (without a parenthesised qualifier) -> ids of documents with it."""
        if self._titles is None:
            self._titles = {}
            for document_id, title in self.store.titles():
                self._titles.setdefault(normalise(_QUALIFIER.sub("", title)), []).append(document_id)
        return self._titles

    def _facts(
        self,
        query: str,
        vector: Any,
        k: int,
        as_of: datetime | None,
        distance: dict[str, int],
        where: Filter | None,
    ) -> list[FactHit]:
        when = as_of or datetime.fromtimestamp(self.store.clock(), tz=timezone.utc)
        hits = []
        candidates = {
            h.record.id.removeprefix(_FACT): h.score for h in self._candidates(query, vector, "fact", k, {})
        }
        for fact in self.store.facts_by_id(list(candidates)):
            if not _held(fact, when):
                continue
            if where is not None and not any(
                where.keep(_filterable(self.store.document(p["document_id"]))) for p in fact.provenance
            ):
                continue
            ends = [distance[e] for e in (fact.subject_id, fact.object_id) if e in distance]
            d = min(ends) if ends else None
            bonus = self.graph_weight / (1 + d) if d is not None else 0.0
            fused = candidates[fact.id]
            hits.append(
                FactHit(
                    namespace=self.namespace,
                    fact=fact,
                    score=fused + bonus,
                    scores={"fused": fused, "graph": bonus},
                    distance=d,
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
            metadata={"document_id": doc.id, **_filterable(doc)},
        )

    def _fact_records(self, fact_ids: Any) -> list[Record]:
        """The index records of facts' sentences; co-mention facts have none (graph edges only)."""
        facts = self.store.facts_by_id(list(dict.fromkeys(fact_ids)))
        return [
            Record(
                id=_FACT + f.id,
                namespace=self._spaces["fact"],
                text=f.sentence,
                metadata={"fact_id": f.id},
            )
            for f in facts
            if f.predicate != CO_MENTION
        ]

    def _index_facts(self, fact_ids: Any) -> None:
        if records := self._fact_records(fact_ids):
            self.memory.upsert(records)

    def _reconcile(self) -> None:
        """Indexes what the store holds and the memory lacks, and drops what the store no
        longer holds (a crash may have come between the two writes)."""
        indexed = set(self.memory.records)
        # Co-mention facts are never indexed: they are neither stale records nor gaps.
        documents, facts = self.store.document_ids(), self.store.fact_ids(except_predicate=CO_MENTION)
        kept = {_DOC: documents, _FACT: facts}
        stale = {
            rid
            for rid in indexed
            for prefix, space in ((_DOC, "passage"), (_FACT, "fact"))
            if rid.startswith(prefix)
            # gone from the store, or indexed where an earlier version kept it
            and (
                rid.removeprefix(prefix) not in kept[prefix]
                or self.memory.records[rid].namespace != self._spaces[space]
            )
        }
        if stale:
            self.memory.delete(stale)
            indexed -= stale
        waiting = self.store.document_ids(indexed=False)  # index_pending's work, not a gap
        missing = [d for d in documents - waiting if _DOC + d not in indexed]
        if missing:
            self.memory.upsert([self._passage(self.store.document(d)) for d in missing])
        if done := [d for d in waiting if _DOC + d in indexed]:  # indexed, then a crash
            self.store.mark_indexed(done)
        self._index_facts(f for f in facts if _FACT + f not in indexed)


class Filter(NamedTuple):
    """A search's document filter: as the memory takes it, and compiled."""

    spec: dict[str, Any]
    keep: Callable[[dict[str, Any]], bool]


def _filterable(doc: Document) -> dict[str, Any]:
    """What filters see of a document: its source and its scalar metadata (under `_META`)."""
    scalars = {_META + k: v for k, v in doc.metadata.items() if isinstance(v, (str, int, float, bool))}
    return {"source": doc.source, **scalars}


def _titled(text: str, about: dict[str, list[str]], max_words: int = 6) -> list[str]:
    """The runs of words in `text` that start with a capital and normalise to a title in
    `about`: the longest at each place, not overlapping."""
    words = text.split()
    found, i = [], 0
    while i < len(words):
        step = 1
        if words[i][:1].isupper():
            for n in range(min(max_words, len(words) - i), 0, -1):
                name = normalise(" ".join(words[i : i + n]))
                if name in about:
                    found.append(name)
                    step = n  # runs do not overlap: "York" in "New York City" is no title
                    break
        i += step
    return found


def _held(fact: Fact, when: datetime) -> bool:
    """Whether `fact` held at `when`; one that states no start counts from when it was learnt."""
    return (fact.valid_at or fact.created_at) <= when and (fact.invalid_at is None or fact.invalid_at > when)
