"""The facts store of one namespace: documents, entities and bi-temporal facts with their
provenance, in SQLite (WAL, synchronous FULL: a write is on disk when its call returns).

What the issue's users of graph stores complained about, and what this store does instead:
- duplicates and homonyms: names resolve within one type only, exact (normalised name or
  alias) before fuzzy; a person and a company of one name stay apart;
- invalidation that retires unrelated facts: a fact on a functional predicate invalidates only
  earlier facts with the same subject and predicate, and keeps them for `as_of` reads;
- deletes that leave orphans: deleting a document removes every fact and entity that only it
  supports, and only those.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from models._private.core.errors import FactsInputError, FactsNotFoundError
from models._private.facts.resolution import NameIndex, normalise
from models._private.facts.schema import (
    Document,
    DocumentIn,
    Entity,
    Extraction,
    Fact,
    FactIn,
    FactsConfig,
    Span,
    from_epoch,
    to_epoch,
)

__all__ = ["FactStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, text TEXT NOT NULL, source TEXT NOT NULL,
    metadata TEXT NOT NULL, reference_time REAL, ingested_at REAL NOT NULL,
    extraction TEXT NOT NULL,  -- pending, done, failed, or none (no extractor reads it)
    extraction_error TEXT,
    job TEXT,                  -- the ingest job that brought it, if any
    indexed INTEGER NOT NULL   -- 1 once its passage is in the search index
);
CREATE INDEX IF NOT EXISTS documents_by_extraction ON documents(extraction);
CREATE TABLE IF NOT EXISTS entities (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS aliases (
    entity_id TEXT NOT NULL REFERENCES entities(id) ON DELETE CASCADE,
    norm TEXT NOT NULL, alias TEXT NOT NULL, PRIMARY KEY (entity_id, norm)
);
CREATE TABLE IF NOT EXISTS mentions (
    entity_id TEXT NOT NULL REFERENCES entities(id) ON DELETE CASCADE,
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    count INTEGER NOT NULL, PRIMARY KEY (entity_id, document_id)
);
CREATE INDEX IF NOT EXISTS mentions_by_document ON mentions(document_id);
CREATE TABLE IF NOT EXISTS facts (
    id TEXT PRIMARY KEY,
    subject_id TEXT NOT NULL REFERENCES entities(id),
    predicate TEXT NOT NULL,
    object_id TEXT REFERENCES entities(id),
    object_value TEXT,
    sentence TEXT NOT NULL, confidence REAL NOT NULL, extractor TEXT NOT NULL,
    valid_at REAL NOT NULL, invalid_at REAL, created_at REAL NOT NULL, expired_at REAL,
    stated_invalid_at REAL,   -- the end it was posted with; invalid_at may be earlier (ended_by)
    ended_by TEXT,            -- the later fact on a functional predicate that ended it
    asserted INTEGER NOT NULL, -- 1: posted directly, so no document delete removes it
    valid_stated INTEGER NOT NULL DEFAULT 1 -- 0: no start said; valid_at is when it was learnt
);
CREATE INDEX IF NOT EXISTS facts_by_subject ON facts(subject_id, predicate);
CREATE INDEX IF NOT EXISTS facts_by_object ON facts(object_id);
CREATE TABLE IF NOT EXISTS provenance (
    fact_id TEXT NOT NULL REFERENCES facts(id) ON DELETE CASCADE,
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    start INTEGER NOT NULL, end INTEGER NOT NULL,   -- -1, -1: somewhere in the document
    PRIMARY KEY (fact_id, document_id, start, end)
);
CREATE INDEX IF NOT EXISTS provenance_by_document ON provenance(document_id);
"""

_FACT_COLUMNS = (
    "f.id, f.subject_id, s.name, f.predicate, f.object_id, COALESCE(o.name, f.object_value), "
    "f.sentence, f.confidence, f.extractor, CASE WHEN f.valid_stated THEN f.valid_at END, f.invalid_at, "
    "f.created_at, f.expired_at"
)
_FACT_FIELDS = [
    "id",
    "subject_id",
    "subject",
    "predicate",
    "object_id",
    "object",
    "sentence",
    "confidence",
    "extractor",
    "valid_at",
    "invalid_at",
    "created_at",
    "expired_at",
]
_FACT_FROM = "facts f JOIN entities s ON s.id = f.subject_id LEFT JOIN entities o ON o.id = f.object_id"


_FOREVER = float("inf")


def _chunks(ids: list[str], size: int = 500) -> Iterator[tuple[list[str], str]]:
    """`ids` in parts SQLite takes as parameters at once, each with its `?,?,…` placeholders."""
    for i in range(0, len(ids), size):
        part = ids[i : i + size]
        yield part, ",".join("?" * len(part))


def _span(document_id: str, start: int, end: int) -> dict[str, Any]:
    """A provenance entry; -1, -1 in the table is a span not known."""
    return {
        "document_id": document_id,
        "start": start if start >= 0 else None,
        "end": end if end >= 0 else None,
    }


def _document(row: tuple) -> Document:
    id_, title, text, source, metadata, reference_time, ingested_at, state, error, job = row[:10]
    return Document(
        id=id_,
        title=title,
        text=text,
        source=source,
        metadata=json.loads(metadata),
        reference_time=from_epoch(reference_time),
        ingested_at=from_epoch(ingested_at),
        extraction=state,
        extraction_error=error,
        job=job,
    )


def _new_id() -> str:
    return uuid.uuid4().hex


class FactStore:
    """Documents, entities and facts of one namespace in one SQLite file.

    Every public method is one transaction: it happens whole or not at all, and has happened
    (on disk) when it returns. Methods are safe to call from several threads.

    Args:
        path: The database file (made with its directory if missing).
        config: Functional predicates and resolution thresholds.
        clock: Seconds since the epoch; tests pass a fake one.
    """

    def __init__(self, path: str, config: FactsConfig | None = None, clock: Any = time.time):
        self.config = config or FactsConfig()
        self.clock = clock
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._lock = threading.RLock()
        self._reload_names()

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        """Adds the columns a store made by an earlier version lacks."""
        have = {r[1] for r in self._db.execute("PRAGMA table_info(documents)")}
        for column, spec in (("job", "TEXT"), ("indexed", "INTEGER NOT NULL DEFAULT 1")):
            if column not in have:
                self._db.execute(f"ALTER TABLE documents ADD COLUMN {column} {spec}")
            self._db.execute(f"CREATE INDEX IF NOT EXISTS documents_by_{column} ON documents({column})")
        if "valid_stated" not in {r[1] for r in self._db.execute("PRAGMA table_info(facts)")}:
            self._db.execute("ALTER TABLE facts ADD COLUMN valid_stated INTEGER NOT NULL DEFAULT 1")
            # An earlier version started a fact that said no time when it stored it.
            self._db.execute("UPDATE facts SET valid_stated = 0 WHERE valid_at = created_at")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db.in_transaction:  # nested in a caller's transaction: part of it
                yield self._db
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back by itself
                    self._db.execute("ROLLBACK")
                self._reload_names()  # names added in the rolled-back transaction are gone
                raise

    def _reload_names(self) -> None:
        """The in-memory name index, read anew from the database."""
        self._names = NameIndex(self.config.fuzzy_min_ratio)
        for entity_id, type_, name in self._db.execute("SELECT id, type, name FROM entities"):
            self._names.add(type_, normalise(name), entity_id)
        query = "SELECT a.entity_id, e.type, a.norm FROM aliases a JOIN entities e ON e.id = a.entity_id"
        for entity_id, type_, norm in self._db.execute(query):
            self._names.add(type_, norm, entity_id)

    # -- writes ---------------------------------------------------------------------------

    def add_documents(
        self, docs: list[DocumentIn], *, pending: bool = False, job: str | None = None, indexed: bool = True
    ) -> list[Document]:
        """Stores several documents in one transaction: all of them, or (on any error) none."""
        with self._transaction():  # re-entered by each add_document: one transaction in all
            return [self.add_document(d, pending=pending, job=job, indexed=indexed) for d in docs]

    def add_document(
        self,
        doc: DocumentIn,
        extraction: Extraction | None = None,
        *,
        pending: bool = False,
        job: str | None = None,
        indexed: bool = True,
    ) -> Document:
        """Stores `doc` and, if given, what an extractor read from it, in one transaction;
        `pending` marks it for an extractor to read later (`pending_documents`), `job` names
        the ingest it belongs to (`job_progress`), and `indexed` False leaves it for
        `unindexed_documents` (a search index that follows the store).

        Raises:
            FactsInputError: the text is too long, the id is taken, or a span falls outside
                the text; nothing is stored.
        """
        if len(doc.text) > self.config.max_text_chars:
            raise FactsInputError("text", f"{len(doc.text)} characters; at most {self.config.max_text_chars}")
        now = self.clock()
        state = "done" if extraction is not None else "pending" if pending else "none"
        stored = Document(
            **doc.model_dump(exclude={"id"}),
            id=doc.id or _new_id(),
            ingested_at=from_epoch(now),
            extraction=state,
            job=job,
        )
        if extraction is not None:
            self._check_spans(extraction, len(doc.text))
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM documents WHERE id = ?", (stored.id,)).fetchone():
                return self._again(db, stored, job)
            db.execute(
                "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                (
                    stored.id,
                    stored.title,
                    stored.text,
                    stored.source,
                    json.dumps(stored.metadata),
                    to_epoch(stored.reference_time),
                    now,
                    state,
                    job,
                    int(indexed),
                ),
            )
            if extraction is not None:
                self._apply(db, extraction, stored.id, to_epoch(stored.reference_time), now)
        return stored

    def _again(self, db: sqlite3.Connection, doc: Document, job: str | None) -> Document:
        """A document posted again under its id: the same one is a retry (it joins `job` and
        nothing else changes); another under that id is refused."""
        old = self.document(doc.id)
        fields = {"title", "text", "source", "metadata", "reference_time"}
        if old.model_dump(include=fields) != doc.model_dump(include=fields):
            raise FactsInputError("id", f"another document {doc.id!r} exists already; delete it first")
        if job is not None:
            db.execute("UPDATE documents SET job = ? WHERE id = ?", (job, doc.id))
            return old.model_copy(update={"job": job})
        return old

    def add_extraction(self, document_id: str, extraction: Extraction) -> list[str]:
        """Adds what an extractor read from a stored document (extraction runs after a document
        is accepted); returns the ids of the facts it produced or supported."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT reference_time, length(text), extraction FROM documents WHERE id = ?", (document_id,)
            )
            found = row.fetchone()
            if found is None:
                raise FactsNotFoundError("document", document_id)
            if found[2] == "done":  # a second reading would count every mention twice
                raise FactsInputError("document", f"{document_id!r} was extracted already")
            self._check_spans(extraction, found[1])
            db.execute(
                "UPDATE documents SET extraction = 'done', extraction_error = NULL WHERE id = ?",
                (document_id,),
            )
            return self._apply(db, extraction, document_id, found[0], self.clock())

    def add_facts(self, facts: list[FactIn], extractor: str = "explicit") -> list[str]:
        """Stores facts posted with no document (asserted; a document delete never removes
        them); returns their ids, an existing fact's id where one said the same already."""
        with self._transaction() as db:
            return self._apply(db, Extraction(extractor=extractor, facts=facts), None, None, self.clock())

    def invalidate_fact(self, fact_id: str, invalid_at: datetime | None = None) -> Fact:
        """Marks a fact as no longer holding from `invalid_at` (default now); it stays readable
        with `as_of` before then."""
        now = self.clock()
        with self._transaction() as db:
            fact = self._fact_row(db, fact_id)
            at = to_epoch(invalid_at) if invalid_at is not None else now
            if at < (fact.valid_at or fact.created_at).timestamp():
                said = "valid_at" if fact.valid_at is not None else "created_at (it states no valid_at)"
                raise FactsInputError("invalid_at", f"is before the fact's {said}")
            db.execute(
                "UPDATE facts SET invalid_at = ?, stated_invalid_at = ?, expired_at = ?, ended_by = NULL "
                "WHERE id = ?",
                (at, at, now, fact_id),
            )
            self._rechain(db, fact.subject_id, fact.predicate, now)
        return self.fact(fact_id)

    def delete_fact(self, fact_id: str) -> None:
        """Removes a fact and every entity left with no mention and no fact."""
        with self._transaction() as db:
            fact = self._fact_row(db, fact_id)
            db.execute("DELETE FROM facts WHERE id = ?", (fact_id,))
            self._rechain(db, fact.subject_id, fact.predicate, self.clock())
            self._drop_orphans(db, {fact.subject_id, fact.object_id} - {None})

    def delete_document(self, document_id: str) -> dict[str, int]:
        """Deletes a document and what only it supports: facts read from it and from no other
        document, and entities left with no mention and no fact. Facts other documents (or a
        direct post) also support stay, with this document's provenance gone.

        Returns the ids of the facts removed, and counts: facts kept with less support,
        entities removed.
        """
        with self._transaction() as db:
            if not db.execute("SELECT 1 FROM documents WHERE id = ?", (document_id,)).fetchone():
                raise FactsNotFoundError("document", document_id)
            supported = [
                r[0]
                for r in db.execute(
                    "SELECT DISTINCT fact_id FROM provenance WHERE document_id = ?", (document_id,)
                )
            ]
            touched = {
                r[0]
                for r in db.execute("SELECT entity_id FROM mentions WHERE document_id = ?", (document_id,))
            }
            db.execute("DELETE FROM provenance WHERE document_id = ?", (document_id,))
            removed, kept = [], 0
            chains = set()
            for fact_id in supported:
                subject, obj, predicate, asserted = db.execute(
                    "SELECT subject_id, object_id, predicate, asserted FROM facts WHERE id = ?", (fact_id,)
                ).fetchone()
                others = db.execute("SELECT 1 FROM provenance WHERE fact_id = ? LIMIT 1", (fact_id,))
                if asserted or others.fetchone():
                    kept += 1
                    continue
                touched |= {subject, obj} - {None}
                db.execute("DELETE FROM facts WHERE id = ?", (fact_id,))
                chains.add((subject, predicate))
                removed.append(fact_id)
            for subject, predicate in chains:  # what a removed fact had ended holds again
                self._rechain(db, subject, predicate, self.clock())
            db.execute("DELETE FROM documents WHERE id = ?", (document_id,))  # and its mentions
            entities = self._drop_orphans(db, touched)
        return {"facts_removed": removed, "facts_kept": kept, "entities_removed": entities}

    def pending_documents(self, limit: int) -> list[Document]:
        """Up to `limit` documents waiting for an extractor, oldest first."""
        with self._lock:
            ids = [
                r[0]
                for r in self._db.execute(
                    "SELECT id FROM documents WHERE extraction = 'pending' ORDER BY ingested_at LIMIT ?",
                    (limit,),
                )
            ]
        return [self.document(i) for i in ids]

    def unindexed_documents(self, limit: int) -> list[Document]:
        """Up to `limit` documents stored with `indexed` False and not marked since, oldest first."""
        with self._lock:
            query = "SELECT id FROM documents WHERE indexed = 0 ORDER BY ingested_at LIMIT ?"
            ids = [r[0] for r in self._db.execute(query, (limit,))]
        return [self.document(i) for i in ids]

    def mark_indexed(self, document_ids: list[str]) -> None:
        """Records that these documents' passages are in the search index."""
        with self._transaction() as db:
            db.executemany("UPDATE documents SET indexed = 1 WHERE id = ?", [(d,) for d in document_ids])

    def job_progress(self, job: str) -> dict[str, int]:
        """How far an ingest job's documents are: how many it holds now (deleted ones drop
        out), are indexed, and are in each extraction state.

        Raises:
            FactsNotFoundError: no document of the job remains.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT extraction, count(*), sum(indexed) FROM documents WHERE job = ? GROUP BY extraction",
                (job,),
            ).fetchall()
        if not rows:
            raise FactsNotFoundError("job", job)
        states = {"pending": 0, "done": 0, "failed": 0, "none": 0, **{r[0]: r[1] for r in rows}}
        return {"documents": sum(r[1] for r in rows), "indexed": sum(r[2] for r in rows), **states}

    def extraction_failed(self, document_id: str, reason: str) -> None:
        """Marks a document whose extraction failed: it stays searchable as a passage, and is
        not tried again by `pending_documents`."""
        with self._transaction() as db:
            db.execute(
                "UPDATE documents SET extraction = 'failed', extraction_error = ? WHERE id = ?",
                (reason[:1000], document_id),
            )

    def extraction_progress(self) -> dict[str, int]:
        """Documents per extraction state: pending, done, failed, none."""
        with self._lock:
            rows = self._db.execute("SELECT extraction, count(*) FROM documents GROUP BY extraction")
            return {"pending": 0, "done": 0, "failed": 0, "none": 0, **dict(rows.fetchall())}

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
            new_id = _new_id()
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

    # -- reads ----------------------------------------------------------------------------

    def document(self, document_id: str) -> Document:
        with self._lock:
            row = self._db.execute("SELECT * FROM documents WHERE id = ?", (document_id,)).fetchone()
        if row is None:
            raise FactsNotFoundError("document", document_id)
        return _document(row)

    def entity(self, entity_id: str) -> Entity:
        with self._lock:
            row = self._entity_row(self._db, entity_id)
            documents = self._db.execute(
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

    def find_entity(self, name: str, type_: str | None = None) -> list[Entity]:
        """Entities `name` resolves to: of `type_`, or of every type that has one."""
        norm = normalise(name)
        with self._lock:
            types = [type_] if type_ else self._names.types()
            found = [hit[0] for t in types if (hit := self._names.find(t, norm))]
        return [self.entity(e) for e in dict.fromkeys(found)]

    def fact(self, fact_id: str) -> Fact:
        with self._lock:
            return self._fact_row(self._db, fact_id)

    def facts(
        self,
        *,
        subject_id: str | None = None,
        predicate: str | None = None,
        entity_id: str | None = None,
        as_of: datetime | None = None,
        include_history: bool = False,
    ) -> list[Fact]:
        """Facts that held at `as_of` (default now), or every recorded one with
        `include_history`; filtered by subject, predicate, or an entity at either end."""
        where, args = [], []
        if subject_id is not None:
            where.append("f.subject_id = ?")
            args.append(subject_id)
        if predicate is not None:
            where.append("f.predicate = ?")
            args.append(predicate)
        if entity_id is not None:
            where.append("(f.subject_id = ? OR f.object_id = ?)")
            args += [entity_id, entity_id]
        if not include_history:
            t = to_epoch(as_of) if as_of is not None else self.clock()
            where.append(
                "(f.valid_at IS NULL OR f.valid_at <= ?) AND (f.invalid_at IS NULL OR f.invalid_at > ?)"
            )
            args += [t, t]
        sql = f"SELECT {_FACT_COLUMNS} FROM {_FACT_FROM}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY f.valid_at, f.created_at", args).fetchall()
            return [self._to_fact(self._db, r) for r in rows]

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

    def facts_by_id(self, fact_ids: list[str]) -> list[Fact]:
        """The facts with these ids that exist, in the order given; two reads in all."""
        found: dict[str, tuple] = {}
        spans: dict[str, list[dict[str, Any]]] = {}
        with self._lock:
            for part, marks in _chunks(fact_ids):
                for row in self._db.execute(
                    f"SELECT {_FACT_COLUMNS} FROM {_FACT_FROM} WHERE f.id IN ({marks})", part
                ):
                    found[row[0]] = row
                for fact_id, d, a, b in self._db.execute(
                    f"SELECT fact_id, document_id, start, end FROM provenance WHERE fact_id IN ({marks}) "
                    "ORDER BY document_id, start",
                    part,
                ):
                    spans.setdefault(fact_id, []).append(_span(d, a, b))
        return [
            Fact(**dict(zip(_FACT_FIELDS, found[f], strict=True)), provenance=spans.get(f, []))
            for f in fact_ids
            if f in found
        ]

    def documents(self, document_ids: list[str]) -> list[Document]:
        """The documents with these ids that exist, in the order given; one read in all."""
        rows: dict[str, tuple] = {}
        with self._lock:
            for part, marks in _chunks(document_ids):
                for row in self._db.execute(f"SELECT * FROM documents WHERE id IN ({marks})", part):
                    rows[row[0]] = row
        return [_document(rows[d]) for d in document_ids if d in rows]

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
            for part, marks in _chunks(entity_ids):
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

    def titles(self) -> list[tuple[str, str]]:
        """(id, title) of every document."""
        with self._lock:
            return self._db.execute("SELECT id, title FROM documents").fetchall()

    def fact_ids(self, except_predicate: str | None = None) -> set[str]:
        """The ids of stored facts, but those on `except_predicate` (to reconcile a search
        index with the store)."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM facts WHERE predicate IS NOT ?", (except_predicate,))
            return {r[0] for r in rows}

    def document_ids(self, indexed: bool | None = None) -> set[str]:
        """Ids of every document, or of those whose passage is (or is not) indexed."""
        query, args = "SELECT id FROM documents", ()
        if indexed is not None:
            query, args = query + " WHERE indexed = ?", (int(indexed),)
        with self._lock:
            return {r[0] for r in self._db.execute(query, args)}

    def stats(self) -> dict[str, int]:
        with self._lock:
            count = {
                t: self._db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("documents", "entities", "facts")
            }
        return count

    # -- internals ------------------------------------------------------------------------

    @staticmethod
    def _check_spans(extraction: Extraction, length: int) -> None:
        spans: list[tuple[str, Span]] = [
            (f"entities.{i}.spans", s) for i, m in enumerate(extraction.entities) for s in m.spans
        ] + [(f"facts.{i}.spans", s) for i, f in enumerate(extraction.facts) for s in f.spans]
        for field, s in spans:
            if not s.start < s.end <= length:
                raise FactsInputError(
                    field, f"[{s.start}, {s.end}) is not inside the text ({length} characters)"
                )

    def _apply(
        self,
        db: sqlite3.Connection,
        ex: Extraction,
        document_id: str | None,
        reference: float | None,
        now: float,
    ) -> list[str]:
        for mention in ex.entities:
            entity_id = self._resolve(db, mention.name, mention.type, now)
            if document_id is not None:
                self._mention(db, entity_id, document_id, max(1, len(mention.spans)))
        return [self._add_fact(db, f, ex.extractor, document_id, reference, now) for f in ex.facts]

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
        entity_id = _new_id()
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

    def _add_fact(
        self,
        db: sqlite3.Connection,
        f: FactIn,
        extractor: str,
        document_id: str | None,
        reference: float | None,
        now: float,
    ) -> str:
        subject = self._resolve(db, f.subject, f.subject_type, now)
        object_id = self._resolve(db, f.object, f.object_type, now) if f.object_type else None
        object_value = None if object_id else f.object
        # A start the fact or its document's reference time states; else it counts from now,
        # when it is learnt, and reads show no start (valid_at None; created_at is that time).
        stated_valid = f.valid_at is not None or reference is not None
        valid = (
            to_epoch(f.valid_at) if f.valid_at is not None else (reference if reference is not None else now)
        )
        stated = to_epoch(f.invalid_at)
        if stated is not None and stated < valid:
            raise FactsInputError("invalid_at", "is before valid_at")
        if document_id is not None:
            for ref in (object_id, subject):
                if ref is not None:
                    self._mention(db, ref, document_id, 0)  # mentioned by its facts, if not named
        # The same statement over a time it already covers (or touches): more support, and
        # perhaps an earlier start, not a second fact. Over another time, it is another fact.
        same = None
        for fact_id, their_valid, their_invalid in db.execute(
            "SELECT id, valid_at, invalid_at FROM facts WHERE subject_id = ? AND predicate = ? "
            "AND object_id IS ? AND object_value IS ? ORDER BY valid_at",
            (subject, f.predicate, object_id, object_value),
        ).fetchall():
            if their_valid <= (stated if stated is not None else _FOREVER) and valid <= (
                their_invalid if their_invalid is not None else _FOREVER
            ):
                same = fact_id
                # A stated start moves it to the earlier of the stated ones; a time learnt never
                # moves it (so a fact of no stated start keeps valid_at = created_at).
                db.execute(
                    "UPDATE facts SET valid_at = CASE WHEN NOT ? THEN valid_at "
                    "WHEN valid_stated THEN min(valid_at, ?) ELSE ? END, "
                    "valid_stated = max(valid_stated, ?) WHERE id = ?",
                    (stated_valid, valid, valid, stated_valid, fact_id),
                )
                break
        fact_id = same or _new_id()
        if same is None:
            db.execute(
                "INSERT INTO facts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL, 0, ?)",
                (
                    fact_id,
                    subject,
                    f.predicate,
                    object_id,
                    object_value,
                    f.text(),
                    f.confidence,
                    extractor,
                    valid,
                    stated,
                    now,
                    stated,
                    stated_valid,
                ),
            )
        if document_id is None:
            db.execute("UPDATE facts SET asserted = 1 WHERE id = ?", (fact_id,))
        else:
            for s in f.spans or [Span(start=0, end=0)]:
                start, end = (s.start, s.end) if f.spans else (-1, -1)
                db.execute(
                    "INSERT OR IGNORE INTO provenance VALUES (?, ?, ?, ?)", (fact_id, document_id, start, end)
                )
        self._rechain(db, subject, f.predicate, now)
        return fact_id

    def _rechain(self, db: sqlite3.Connection, subject: str, predicate: str, now: float) -> None:
        """On a functional predicate, each of the subject's facts holds until the next one
        begins (or its own stated end, if sooner); nothing else is touched.

        Derived from the facts as they are, so a new fact ends the one before it, an older one
        learnt later ends where the newer begins, and removing a fact gives the one it ended
        back its end. `expired_at` records when a fact was first ended by another, and is
        cleared when that no longer holds; an end stated with the fact is no expiry.
        """
        if predicate not in self.config.functional_predicates:
            return
        rows = db.execute(
            "SELECT id, valid_at, invalid_at, stated_invalid_at, expired_at, ended_by FROM facts "
            "WHERE subject_id = ? AND predicate = ? ORDER BY valid_at, created_at",
            (subject, predicate),
        ).fetchall()
        if not rows:
            return
        for (fact_id, _, invalid, stated, expired, ended_by), later in zip(
            rows, [*rows[1:], None], strict=True
        ):
            if later is not None and (stated is None or later[1] < stated):
                update = (
                    later[1],
                    expired if ended_by is not None and expired is not None else now,
                    later[0],
                )
            else:
                update = (stated, expired if ended_by is None else None, None)
            if update != (invalid, expired, ended_by):
                db.execute(
                    "UPDATE facts SET invalid_at = ?, expired_at = ?, ended_by = ? WHERE id = ?",
                    (*update, fact_id),
                )

    def _dedupe(self, db: sqlite3.Connection, entity_id: str, now: float) -> None:
        """After a merge: facts of `entity_id` that now say the same over overlapping times
        become one, with the support of both."""
        rows = db.execute(
            "SELECT id, subject_id, predicate, object_id, object_value, valid_at, invalid_at, asserted "
            "FROM facts WHERE subject_id = ? OR object_id = ? ORDER BY valid_at, created_at",
            (entity_id, entity_id),
        ).fetchall()
        kept: dict[tuple, list] = {}
        for fact_id, subject, predicate, obj, value, valid, invalid, asserted in rows:
            key = (subject, predicate, obj, value)
            first = kept.get(key)
            if first is None or valid > (first[2] if first[2] is not None else _FOREVER):
                kept[key] = [fact_id, valid, invalid]
                continue
            db.execute("UPDATE OR IGNORE provenance SET fact_id = ? WHERE fact_id = ?", (first[0], fact_id))
            db.execute("UPDATE facts SET asserted = max(asserted, ?) WHERE id = ?", (asserted, first[0]))
            db.execute("DELETE FROM facts WHERE id = ?", (fact_id,))
        for subject, predicate in {(k[0], k[1]) for k in kept}:
            self._rechain(db, subject, predicate, now)

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

    def _fact_row(self, db: sqlite3.Connection, fact_id: str) -> Fact:
        row = db.execute(f"SELECT {_FACT_COLUMNS} FROM {_FACT_FROM} WHERE f.id = ?", (fact_id,)).fetchone()
        if row is None:
            raise FactsNotFoundError("fact", fact_id)
        return self._to_fact(db, row)

    @staticmethod
    def _to_fact(db: sqlite3.Connection, row: tuple) -> Fact:
        spans = db.execute(
            "SELECT document_id, start, end FROM provenance WHERE fact_id = ? ORDER BY document_id, start",
            (row[0],),
        )
        provenance = [_span(d, s, e) for d, s, e in spans]
        return Fact(**dict(zip(_FACT_FIELDS, row, strict=True)), provenance=provenance)
