"""Graph queries over the facts store: the neighbourhood of entities, a shortest chain of facts
between two, which documents mention which entities, and the edges personalised PageRank
walks."""

from __future__ import annotations

from datetime import datetime

from models._private.facts.schema import Fact, to_epoch
from models._private.facts.store.rows import id_chunks

__all__ = ["GraphQueriesMixin"]


class GraphQueriesMixin:
    """The graph part of `FactStore` (`core`), which supplies `_db`, `_lock` and `clock`."""

    def neighbourhood(
        self,
        seeds: list[str],
        depth: int,
        *,
        as_of: datetime | None = None,
        predicates: list[str] | None = None,
        with_facts: bool = True,
    ) -> tuple[dict[str, int], list[Fact]]:
        """Entities within `depth` facts of `seeds` (id -> distance) and the facts on the way
        (unless `with_facts` is False: a search needs the distances only), over facts that held
        at `as_of` (default now), optionally of some predicates only."""
        t = to_epoch(as_of) if as_of is not None else self.clock()
        distance = {s: 0 for s in seeds}
        frontier, edges = list(seeds), {}
        with self._lock:
            for d in range(1, depth + 1):
                reached = []
                for entity_id in frontier:
                    for fact_id, ends in self._edges(entity_id, t, predicates):
                        edges.setdefault(fact_id, None)
                        for other in ends:
                            if other is not None and other not in distance:
                                distance[other] = d
                                reached.append(other)
                frontier = reached
        return distance, self.facts_by_id(list(edges)) if with_facts else []

    def _edges(
        self, entity_id: str, t: float, predicates: list[str] | None
    ) -> list[tuple[str, tuple[str, str | None]]]:
        """(fact id, (subject id, object id)) of the facts at `entity_id` that held at `t`."""
        rows = self._db.execute(
            "SELECT id, subject_id, object_id, predicate FROM facts WHERE (subject_id = ? OR object_id = ?) "
            "AND valid_at <= ? AND (invalid_at IS NULL OR invalid_at > ?) ORDER BY valid_at, created_at",
            (entity_id, entity_id, t, t),
        )
        return [(f, (s, o)) for f, s, o, p in rows if predicates is None or p in predicates]

    def path(
        self,
        source_id: str,
        target_id: str,
        max_depth: int,
        *,
        as_of: datetime | None = None,
        predicates: list[str] | None = None,
    ) -> list[Fact] | None:
        """The facts of a shortest chain from one entity to another (either direction along
        each fact), over facts that held at `as_of`; [] from an entity to itself, None when
        none is at most `max_depth` long.

        Raises:
            FactsNotFoundError: either entity does not exist.
        """
        self.entity(source_id), self.entity(target_id)
        t = to_epoch(as_of) if as_of is not None else self.clock()
        came: dict[str, tuple[str, str] | None] = {source_id: None}  # entity -> (fact, from entity)
        frontier = [source_id]
        with self._lock:
            for _ in range(max_depth):
                if target_id in came:
                    break
                reached = []
                for entity_id in frontier:
                    for fact_id, (subject, obj) in self._edges(entity_id, t, predicates):
                        other = obj if subject == entity_id else subject
                        if other is not None and other not in came:
                            came[other] = (fact_id, entity_id)
                            reached.append(other)
                frontier = reached
        if target_id not in came:
            return None
        chain, at = [], target_id
        while (step := came[at]) is not None:
            chain.append(step[0])
            at = step[1]
        return self.facts_by_id(chain[::-1])

    def documents_mentioning(self, entity_ids: list[str]) -> dict[str, list[str]]:
        """Document id -> the given entities it mentions."""
        out: dict[str, list[str]] = {}
        with self._lock:
            for part, marks in id_chunks(entity_ids):
                query = f"SELECT document_id, entity_id FROM mentions WHERE entity_id IN ({marks})"
                rows = self._db.execute(query, part)
                for document_id, entity_id in rows:
                    out.setdefault(document_id, []).append(entity_id)
        return out

    def entities_mentioned(self, document_id: str) -> list[tuple[str, str]]:
        """(id, name) of the entities a document mentions."""
        with self._lock:
            return self._db.execute(
                "SELECT e.id, e.name FROM mentions m JOIN entities e ON e.id = m.entity_id "
                "WHERE m.document_id = ?",
                (document_id,),
            ).fetchall()

    def graph_edges(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(document, entity) of every mention and (subject, object) of every fact between two
        entities that holds now: the graph personalised PageRank walks."""
        with self._lock:
            mentions = self._db.execute("SELECT document_id, entity_id FROM mentions").fetchall()
            edges = self._db.execute(
                "SELECT subject_id, object_id FROM facts WHERE object_id IS NOT NULL AND invalid_at IS NULL"
            ).fetchall()
        return mentions, edges
