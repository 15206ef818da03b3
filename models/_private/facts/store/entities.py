"""Entities in the facts store: resolving a name to an entity (exact within its type before
fuzzy, a fuzzy match remembered as an alias), mentions, merge and split (corrections),
dropping entities nothing refers to any more, and reading entities by id or by name."""

from __future__ import annotations

import sqlite3
from typing import Any

from models._private.core.errors import FactsInputError, FactsNotFoundError
from models._private.facts.resolution import normalise
from models._private.facts.schema import Entity
from models._private.facts.store.rows import id_chunks, make_id

__all__ = ["EntitiesMixin"]


class EntitiesMixin:
    """The entity part of `FactStore` (`core`), which supplies `_db`, `_lock`, `_transaction`,
    `_names` (the in-memory name index) and `clock`."""

    def merge_entities(self, keep_id: str, other_id: str) -> Entity:
        """Makes `other_id` part of `keep_id` (a correction): its facts, mentions, name and
        aliases move over, and it is gone."""
        if keep_id == other_id:
            raise FactsInputError("other", "an entity cannot be merged into itself")
        with self._transaction() as db:
            keep, other = self._entity_row(db, keep_id), self._entity_row(db, other_id)
            if keep["type"] != other["type"]:
                raise FactsInputError("other", f"types differ ({keep['type']} and {other['type']})")
            db.execute("UPDATE facts SET subject_id = ? WHERE subject_id = ?", (keep_id, other_id))
            db.execute("UPDATE facts SET object_id = ? WHERE object_id = ?", (keep_id, other_id))
            for document_id, count in db.execute(
                "SELECT document_id, count FROM mentions WHERE entity_id = ?", (other_id,)
            ).fetchall():
                self._mention(db, keep_id, document_id, count)
            names = [other["name"], *other["aliases"]]
            db.execute("DELETE FROM entities WHERE id = ?", (other_id,))
            for name in names:
                self._names.remove(other["type"], normalise(name), other_id)
                self._alias(db, keep_id, keep["type"], name)
            self._dedupe(db, keep_id, self.clock())
        return self.entity(keep_id)

    def split_entity(self, entity_id: str, document_ids: list[str], name: str | None = None) -> Entity:
        """Moves what `document_ids` say of an entity to a new one named `name` (a correction,
        when two things were merged): their mentions, and the facts only they support.

        Raises:
            FactsInputError: no `name`, or one that already names an entity of the type (the
                two would be one again at the next mention).
        """
        with self._transaction() as db:
            old = self._entity_row(db, entity_id)
            if not name or not normalise(name):
                raise FactsInputError("name", "a split needs a name that tells the new entity apart")
            if self._names.exact(old["type"], normalise(name)) is not None:
                raise FactsInputError("name", f"{name!r} already names an entity of type {old['type']}")
            marks = ",".join("?" * len(document_ids))
            mentioned = db.execute(
                f"SELECT document_id, count FROM mentions WHERE entity_id = ? AND document_id IN ({marks})",
                (entity_id, *document_ids),
            ).fetchall()
            if not mentioned:
                raise FactsInputError("documents", "none of them mentions the entity")
            new_id = make_id()
            db.execute("INSERT INTO entities VALUES (?, ?, ?, ?)", (new_id, name, old["type"], self.clock()))
            self._names.add(old["type"], normalise(name), new_id)
            for document_id, count in mentioned:
                db.execute(
                    "DELETE FROM mentions WHERE entity_id = ? AND document_id = ?", (entity_id, document_id)
                )
                self._mention(db, new_id, document_id, count)
            only_theirs = [
                r[0]
                for r in db.execute(
                    f"SELECT f.id FROM facts f WHERE (f.subject_id = ? OR f.object_id = ?) AND NOT EXISTS ("
                    f"SELECT 1 FROM provenance p WHERE p.fact_id = f.id AND p.document_id NOT IN ({marks})"
                    f") AND EXISTS (SELECT 1 FROM provenance p WHERE p.fact_id = f.id)",
                    (entity_id, entity_id, *document_ids),
                )
            ]
            for fact_id in only_theirs:
                db.execute(
                    "UPDATE facts SET subject_id = ? WHERE id = ? AND subject_id = ?",
                    (new_id, fact_id, entity_id),
                )
                db.execute(
                    "UPDATE facts SET object_id = ? WHERE id = ? AND object_id = ?",
                    (new_id, fact_id, entity_id),
                )
            self._drop_orphans(db, {entity_id})
        return self.entity(new_id)

    def entity(self, entity_id: str) -> Entity:
        with self._reading() as db:
            row = self._entity_row(db, entity_id)
            documents = db.execute(
                "SELECT document_id, count FROM mentions WHERE entity_id = ? ORDER BY document_id",
                (entity_id,),
            ).fetchall()
        return Entity(
            id=entity_id,
            name=row["name"],
            type=row["type"],
            aliases=row["aliases"],
            mentions=sum(c for _, c in documents),
            documents=[d for d, _ in documents],
        )

    def entities(self, entity_ids: list[str]) -> list[Entity]:
        """The entities with these ids that exist, in the order given; three reads a 500 ids."""
        rows: dict[str, tuple[str, str]] = {}
        aliases: dict[str, list[str]] = {}
        documents: dict[str, list[tuple[str, int]]] = {}
        with self._reading() as db:
            for part, marks in id_chunks(entity_ids):
                for entity_id, name, type_ in db.execute(
                    f"SELECT id, name, type FROM entities WHERE id IN ({marks})", part
                ):
                    rows[entity_id] = (name, type_)
                query = f"SELECT entity_id, alias FROM aliases WHERE entity_id IN ({marks}) ORDER BY alias"
                for entity_id, alias in db.execute(query, part):
                    aliases.setdefault(entity_id, []).append(alias)
                query = (
                    f"SELECT entity_id, document_id, count FROM mentions WHERE entity_id IN ({marks}) "
                    "ORDER BY document_id"
                )
                for entity_id, document_id, count in db.execute(query, part):
                    documents.setdefault(entity_id, []).append((document_id, count))
        return [
            Entity(
                id=e,
                name=rows[e][0],
                type=rows[e][1],
                aliases=aliases.get(e, []),
                mentions=sum(c for _, c in documents.get(e, [])),
                documents=[d for d, _ in documents.get(e, [])],
            )
            for e in entity_ids
            if e in rows
        ]

    def entity_names(self, entity_ids: list[str]) -> list[str]:
        """The names of the entities with these ids that exist, in the order given; one read."""
        names: dict[str, str] = {}
        with self._reading() as db:
            for part, marks in id_chunks(entity_ids):
                names.update(db.execute(f"SELECT id, name FROM entities WHERE id IN ({marks})", part))
        return [names[e] for e in entity_ids if e in names]

    def find_entity(self, name: str, type_: str | None = None) -> list[Entity]:
        """Entities `name` resolves to: of `type_`, or of every type that has one."""
        norm = normalise(name)
        with self._lock:
            types = [type_] if type_ else self._names.types()
            found = [hit[0] for t in types if (hit := self._names.find(t, norm))]
        return [self.entity(e) for e in dict.fromkeys(found)]

    def match_names(self, text: str, max_words: int = 6) -> list[str]:
        """Ids of entities whose name or alias appears in `text` word for word (normalised),
        longest names first; used to seed graph search from a query."""
        words = normalise(text).split()
        found: dict[str, None] = {}
        with self._lock:
            types = self._names.types()
        for n in range(min(max_words, len(words)), 0, -1):
            for i in range(len(words) - n + 1):
                gram = " ".join(words[i : i + n])
                for t in types:
                    hit = self._names.exact(t, gram)
                    if hit is not None:
                        found.setdefault(hit)
        return list(found)

    def _resolve(self, db: sqlite3.Connection, name: str, type_: str, now: float) -> str:
        norm = normalise(name)
        if not norm:
            raise FactsInputError("name", f"{name!r} has no letters or digits")
        found = self._names.find(type_, norm)
        if found is not None:
            entity_id, how = found
            if how == "fuzzy":  # remember the variant: the next one is an exact match
                self._alias(db, entity_id, type_, name)
            return entity_id
        entity_id = make_id()
        db.execute("INSERT INTO entities VALUES (?, ?, ?, ?)", (entity_id, name.strip(), type_, now))
        self._names.add(type_, norm, entity_id)
        return entity_id

    def _alias(self, db: sqlite3.Connection, entity_id: str, type_: str, alias: str) -> None:
        norm = normalise(alias)
        db.execute("INSERT OR IGNORE INTO aliases VALUES (?, ?, ?)", (entity_id, norm, alias))
        self._names.add(type_, norm, entity_id)

    @staticmethod
    def _mention(db: sqlite3.Connection, entity_id: str, document_id: str, count: int) -> None:
        db.execute(
            "INSERT INTO mentions VALUES (?, ?, ?) ON CONFLICT (entity_id, document_id) "
            "DO UPDATE SET count = count + excluded.count",
            (entity_id, document_id, count),
        )

    def _drop_orphans(self, db: sqlite3.Connection, entity_ids: set[str]) -> int:
        dropped = 0
        for entity_id in entity_ids:
            used = db.execute(
                "SELECT 1 FROM mentions WHERE entity_id = ? UNION ALL "
                "SELECT 1 FROM facts WHERE subject_id = ? OR object_id = ? LIMIT 1",
                (entity_id, entity_id, entity_id),
            ).fetchone()
            if used:
                continue
            row = self._entity_row(db, entity_id)
            db.execute("DELETE FROM entities WHERE id = ?", (entity_id,))
            for name in [row["name"], *row["aliases"]]:
                self._names.remove(row["type"], normalise(name), entity_id)
            dropped += 1
        return dropped

    @staticmethod
    def _entity_row(db: sqlite3.Connection, entity_id: str) -> dict[str, Any]:
        row = db.execute("SELECT name, type FROM entities WHERE id = ?", (entity_id,)).fetchone()
        if row is None:
            raise FactsNotFoundError("entity", entity_id)
        aliases = [
            a
            for (a,) in db.execute(
                "SELECT alias FROM aliases WHERE entity_id = ? ORDER BY alias", (entity_id,)
            )
        ]
        return {"name": row[0], "type": row[1], "aliases": aliases}
