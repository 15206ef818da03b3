"""Search over one namespace's knowledge (a part of `FactsBase`, `base`): passages, facts, both,
or graph mode, which seeds from the entities the query names and reranks what lies near them
("distance", "hop" or "pagerank"; `benchmarks/README.md` compares them); and the shapes of its
results."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, Field

from models._private.core.errors import FactsInputError, MemoryInputError
from models._private.facts.index import FACT_PREFIX, META_PREFIX, filterable_fields
from models._private.facts.pagerank import DocumentGraph
from models._private.facts.resolution import normalise
from models._private.facts.schema import Entity, Fact, from_epoch, to_epoch
from models._private.memory.filters import compile_filter

__all__ = [
    "CHAIN_SHARE",
    "HOP_FROM",
    "MAX_DEPTH",
    "MAX_K",
    "PAGERANK_DOCUMENTS",
    "PAGERANK_FROM",
    "QUERY_VECTORS",
    "FactHit",
    "PassageHit",
    "SearchMixin",
    "SearchMode",
    "SearchResult",
]

SearchMode = Literal["passages", "facts", "hybrid", "graph"]
MAX_K = 100
# Chosen on HotpotQA's dev split (benchmarks/README.md, facts): 5 and 0.75 took R@2 from 0.735 to
# 0.755, on a plateau (0.745-0.755 for 5 to 8 passages and a share of 0.5 or 0.75; 3 and 0.5 before).
HOP_FROM = 5  # the best passages whose entities the hop rerank follows
CHAIN_SHARE = 0.75  # of the hop bonus, what a best passage gains for naming another found one
PAGERANK_FROM = 3  # the best passages the pagerank rerank starts its walk from, beside the entities
PAGERANK_DOCUMENTS = 50  # documents the pagerank rerank lifts, by rank
_QUALIFIER = re.compile(r"\s*\([^)]*\)\s*$")  # "Kiss and Tell (1945 film)" is about "Kiss and Tell"
MAX_DEPTH = 3
QUERY_VECTORS = 256  # the queries whose vectors a namespace keeps (`_query_vector`)


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


class SearchMixin:
    """The search part of `FactsBase` (`base`), which supplies `store`, `memory`, `extractor`,
    `namespace`, `graph_weight`, `graph_rerank`, `_spaces`, `_lock`, the caches graph search
    builds (`_titles`, `_graph`), and the last queries' vectors (`_query_vectors`)."""

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
            where = {META_PREFIX + key if key != "source" else key: v for key, v in (filters or {}).items()}
            keep = compile_filter(where)
        except MemoryInputError as e:
            field = e.field.replace("filter", "filters", 1).replace(META_PREFIX, "")
            raise FactsInputError(field, e.reason) from None
        with self._lock:
            return self._search(query, k, mode, as_of, depth, Filter(where, keep) if filters else None)

    def _search(
        self, query: str, k: int, mode: str, as_of: datetime | None, depth: int, where: Filter | None
    ) -> SearchResult:
        vector = self._query_vector(query)  # one encoding for passages and facts
        with self.store.snapshot():  # the search's reads: one transaction, one state of the store
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
                result.entities = self.store.entities([e for e in linked if e in distance])
        return result

    def _query_vector(self, query: str) -> Any:
        """The query's vector, from the last `QUERY_VECTORS` queries' if it is one of them: a
        caller that asks one question in several modes (or again) encodes it once, and the
        encoder is most of a search's time (8 of 12.5 ms in passages mode on 2 cores)."""
        vectors = self._query_vectors
        vector = vectors.get(query)
        if vector is None:
            vector = vectors[query] = self.memory.embedder.encode([query])[0]
            vector.setflags(write=False)  # shared by every search that asks it
            if len(vectors) > QUERY_VECTORS:
                vectors.popitem(last=False)  # the least recently asked
        else:
            vectors.move_to_end(query)
        return vector

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
            near = self._hops(query, base)
        elif graph and self.graph_rerank == "pagerank":
            near = self._pagerank(base, [e for e, d in distance.items() if d == 0])
        elif graph and distance:
            for document_id, entities in self.store.documents_mentioning(list(distance)).items():
                d = min(distance[e] for e in entities)
                near[document_id] = (d, self.graph_weight / (1 + d))
        # Every score is known before a row is read: the rows are read best first, k at a time,
        # so a search reads the k it returns (more only where `as_of` or a filter drops some).
        ranked = sorted(
            set(base) | set(near), key=lambda d: -(base.get(d, 0.0) + near.get(d, (None, 0.0))[1])
        )
        hits: list[PassageHit] = []
        for start in range(0, len(ranked), k):
            for doc in self.store.documents(ranked[start : start + k]):
                if as_of is not None and doc.reference_time is not None and doc.reference_time > as_of:
                    continue
                if where is not None and not where.keep(filterable_fields(doc)):  # a lifted document
                    continue
                d, bonus = near.get(doc.id, (None, 0.0))
                fused = base.get(doc.id, 0.0)
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
            if len(hits) >= k:
                break
        return hits[:k]

    def _hops(self, query: str, base: dict[str, float]) -> dict[str, tuple[int, float]]:
        """Documents about what the query names (distance 0), about the entities the best
        passages name (distance 1), and those best passages that name another found passage
        (a chain's first hop), with their bonus.

        The query names a title as a passage does (`_titled`): written out as a run that starts
        with a capital or a digit, the longest run at each place. So a title inside a longer
        one the query names ("Kiss" in "Kiss and Tell"), or a title the query writes in lower
        case ("the fallen", "a hotel"), lifts nothing, where the entities the query names word
        for word (`_seeds`, any case, overlapping) would lift both (dev R@2 0.755 -> 0.760,
        nDCG@10 0.885 -> 0.891: 6 spurious lifts gone from 100 questions' top 10)."""
        about = self._about()
        near: dict[str, tuple[int, float]] = {}

        def lift(name: str, distance: int, bonus: float, source: str | None) -> list[str]:
            named = [d for d in about.get(normalise(name), ()) if d != source]
            for document_id in named:
                if bonus > near.get(document_id, (0, 0.0))[1]:
                    near[document_id] = (distance, bonus)
            return named

        for name in _titled(query, about):
            lift(name, 0, self.graph_weight, None)
        best = sorted(base, key=lambda d: -base[d])[:HOP_FROM]
        chains: dict[str, float] = {}  # a best passage -> the best fused score of one it names
        mentioned = self.store.entities_mentioned_in(best)
        for doc in self.store.documents(best):
            source = doc.id
            names = mentioned[source]
            # Titles the passage writes out, capitalised, whether or not NER caught them.
            for name in dict.fromkeys([*names, *_titled(doc.text, about)]):
                for target in lift(name, 1, self.graph_weight * base[source], source):
                    chains[source] = max(chains.get(source, 0.0), base.get(target, 0.0))
        # The first hop of a chain gains too: a best passage that names another found passage
        # is likelier the question's first hop (dev R@2 0.715 -> 0.735 at a share of 0.5;
        # benchmarks/README.md).
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
        best = {d: base[d] for d in sorted(base, key=lambda d: -base[d])[:PAGERANK_FROM]}
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
        when = as_of or from_epoch(self.store.clock())
        hits: list[FactHit] = []
        candidates = {
            h.record.id.removeprefix(FACT_PREFIX): h.score
            for h in self._candidates(query, vector, "fact", k, {})
        }
        ids = list(candidates)
        # With no graph bonus a fact's score is its fused one, known before its row is read: the
        # rows are read best first, k at a time (graph mode reads them all, for their ends).
        step = len(ids) if distance else k
        for start in range(0, len(ids), max(1, step)):
            facts = [f for f in self.store.facts_by_id(ids[start : start + step]) if _held(f, when)]
            if where is not None:  # the documents they were read from, in one read
                read = {p["document_id"] for f in facts for p in f.provenance}
                passing = {d.id for d in self.store.documents(list(read)) if where.keep(filterable_fields(d))}
                facts = [f for f in facts if any(p["document_id"] in passing for p in f.provenance)]
            for fact in facts:
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
            if len(hits) >= k and not distance:
                break
        return sorted(hits, key=lambda h: -h.score)[:k]


class Filter(NamedTuple):
    """A search's document filter: as the memory takes it, and compiled."""

    spec: dict[str, Any]
    keep: Callable[[dict[str, Any]], bool]


def _titled(text: str, about: dict[str, list[str]], max_words: int = 6) -> list[str]:
    """The runs of words in `text` that start with a capital or a digit ("1925 Birthday
    Honours") and normalise to a title in `about`: the longest at each place, not overlapping."""
    words = text.split()
    found, i = [], 0
    while i < len(words):
        step = 1
        if words[i][:1].isupper() or words[i][:1].isdigit():
            for n in range(min(max_words, len(words) - i), 0, -1):
                name = normalise(" ".join(words[i : i + n]))
                if name in about:
                    found.append(name)
                    step = n  # runs do not overlap: "York" in "New York City" is no title
                    break
        i += step
    return found


def _held(fact: Fact, when: datetime) -> bool:
    """Whether `fact` held at `when`; one that states no start counts from when it was learnt.

    Compared in epoch seconds, as the store's SQL compares them, so that both agree to the last
    bit in any year."""
    t = to_epoch(when)
    return to_epoch(fact.valid_at or fact.created_at) <= t and (
        fact.invalid_at is None or to_epoch(fact.invalid_at) > t
    )
