"""Graph queries over the facts store: the neighbourhood of entities, a shortest chain of facts
between two, which documents mention which entities, and the edges personalised PageRank
walks."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from models._private.facts.schema import Fact, to_epoch
from models._private.facts.store.rows import id_chunks

__all__ = ["MAX_WALK_FACTS", "GraphQueriesMixin"]

MAX_WALK_FACTS = 10_000  # facts a neighbourhood or path walk reads at most (nearest first)


class GraphQueriesMixin:
    """The graph part of `FactStore` (`core`), which supplies `_reading` and `clock`."""

    def neighbourhood(
        self,
        seeds: list[str],
        depth: int,
        *,
        as_of: datetime | None = None,
        predicates: list[str] | None = None,
        with_facts: bool = True,
        max_facts: int = MAX_WALK_FACTS,
    ) -> tuple[dict[str, int], list[Fact]]:
        """Entities within `depth` facts of `seeds` (id -> distance) and the facts on the way
        (unless `with_facts` is False: a search needs the distances only), over facts that held
        at `as_of` (default now), optionally of some predicates only.

        The walk stops at `max_facts` facts (nearest first): one query per level of depth, never
        one per entity, however many a level reaches.
        """
        t = to_epoch(as_of) if as_of is not None else self.clock()
        distance = {s: 0 for s in seeds}
        frontier, edges = list(seeds), {}
        with self._reading() as db:
            for d in range(1, depth + 1):
                reached = []
                found = self._edges(db, frontier, t, predicates, max_facts - len(edges))
                for fact_id, other in _from_each(frontier, found):
                    edges.setdefault(fact_id, None)
                    if other is not None and other not in distance:
                        distance[other] = d
                        reached.append(other)
                frontier = reached
                if not frontier or len(edges) >= max_facts:
                    break
            return distance, self.facts_by_id(list(edges)) if with_facts else []

    @staticmethod
    def _edges(
        db: sqlite3.Connection, entity_ids: list[str], t: float, predicates: list[str] | None, limit: int
    ) -> list[tuple[str, tuple[str, str | None]]]:
        """(fact id, (subject id, object id)) of up to `limit` facts at any of `entity_ids` that
        held at `t`, in a few queries (one per 500 entities)."""
        out: list[tuple[str, tuple[str, str | None]]] = []
        only = ""
        if predicates is not None:
            only = f" AND predicate IN ({','.join('?' * len(predicates))})"
        for part, marks in id_chunks(entity_ids):
            if len(out) >= limit:
                break
            rows = db.execute(
                f"SELECT id, subject_id, object_id FROM facts WHERE (subject_id IN ({marks}) OR "
                f"object_id IN ({marks})) AND valid_at <= ? AND (invalid_at IS NULL OR invalid_at > ?)"
                f"{only} ORDER BY valid_at, created_at LIMIT ?",
                (*part, *part, t, t, *(predicates or ()), limit - len(out)),
            )
            out += [(f, (s, o)) for f, s, o in rows]
        return out

    def path(
        self,
        source_id: str,
        target_id: str,
        max_depth: int,
        *,
        as_of: datetime | None = None,
        predicates: list[str] | None = None,
        max_facts: int = MAX_WALK_FACTS,
    ) -> list[Fact] | None:
        """The facts of a shortest chain from one entity to another (either direction along
        each fact), over facts that held at `as_of`; [] from an entity to itself, None when
        none is at most `max_depth` long among the first `max_facts` facts the search walks
        (one query per level of depth).

        Raises:
            FactsNotFoundError: either entity does not exist.
        """
        self.entity(source_id), self.entity(target_id)
        t = to_epoch(as_of) if as_of is not None else self.clock()
        came: dict[str, tuple[str, str] | None] = {source_id: None}  # entity -> (fact, from entity)
        frontier, walked = [source_id], 0
        with self._reading() as db:
            for _ in range(max_depth):
                if target_id in came or not frontier or walked >= max_facts:
                    break
                reached = []
                found = self._edges(db, frontier, t, predicates, max_facts - walked)
                walked += len(found)
                for fact_id, other, entity_id in _from_each(frontier, found, with_start=True):
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
        with self._reading() as db:
            for part, marks in id_chunks(entity_ids):
                query = f"SELECT document_id, entity_id FROM mentions WHERE entity_id IN ({marks})"
                rows = db.execute(query, part)
                for document_id, entity_id in rows:
                    out.setdefault(document_id, []).append(entity_id)
        return out

    def entities_mentioned(self, document_id: str) -> list[tuple[str, str]]:
        """(id, name) of the entities a document mentions."""
        with self._reading() as db:
            return db.execute(
                "SELECT e.id, e.name FROM mentions m JOIN entities e ON e.id = m.entity_id "
                "WHERE m.document_id = ?",
                (document_id,),
            ).fetchall()

    def entities_mentioned_in(self, document_ids: list[str]) -> dict[str, list[str]]:
        """Document id -> the names of the entities it mentions, for several documents in one
        read."""
        out: dict[str, list[str]] = {d: [] for d in document_ids}
        with self._reading() as db:
            for part, marks in id_chunks(document_ids):
                rows = db.execute(
                    "SELECT m.document_id, e.name FROM mentions m JOIN entities e ON e.id = m.entity_id "
                    f"WHERE m.document_id IN ({marks})",
                    part,
                )
                for document_id, name in rows:
                    out[document_id].append(name)
        return out

    def graph_edges(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(document, entity) of every mention and (subject, object) of every fact between two
        entities that holds now: the graph personalised PageRank walks."""
        with self._reading() as db:
            mentions = db.execute("SELECT document_id, entity_id FROM mentions").fetchall()
            edges = db.execute(
                "SELECT subject_id, object_id FROM facts WHERE object_id IS NOT NULL AND invalid_at IS NULL"
            ).fetchall()
        return mentions, edges


def _from_each(
    frontier: list[str], found: list[tuple[str, tuple[str, str | None]]], with_start: bool = False
) -> list[tuple]:
    """(fact id, the entity at its other end[, the frontier's entity]) of a level's facts, in the
    frontier's order and each entity's facts in the order they began (as a walk one entity at a
    time would meet them)."""
    at: dict[str, list[tuple]] = {e: [] for e in frontier}
    for fact_id, (subject, obj) in found:
        for start, other in ((subject, obj), (obj, subject)) if subject != obj else ((subject, obj),):
            if start in at:
                at[start].append((fact_id, other, start) if with_start else (fact_id, other))
    return [step for e in frontier for step in at[e]]
