"""The facts store of one namespace: documents, entities and bi-temporal facts with their
provenance, in SQLite (WAL, synchronous FULL: a write is on disk when its call returns).

What the issue's users of graph stores complained about, and what this store does instead:
- duplicates and homonyms: names resolve within one type only, exact (normalised name or
  alias) before fuzzy; a person and a company of one name stay apart;
- invalidation that retires unrelated facts: a fact on a functional predicate invalidates only
  earlier facts with the same subject and predicate, and keeps them for `as_of` reads;
- deletes that leave orphans: deleting a document removes every fact and entity that only it
  supports, and only those.

This module holds the store's core: the schema, its migrations, the connection and its
transactions, and the in-memory name index. The rest of `FactStore` is in mixins beside it, one
concern each: `documents` (documents in and out), `jobs` (ingest jobs: extraction and indexing
queues), `entities` (resolution, merge and split), `temporal` (bi-temporal facts and the chains
of functional predicates), `graph` (neighbourhood and path queries); `rows` holds the SQL of a
fact row and the row helpers they share.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

from models._private.core.errors import FactsReadTimeoutError
from models._private.core.private_files import private_dir, private_file
from models._private.facts.resolution import NameIndex, normalise
from models._private.facts.schema import FactsConfig
from models._private.facts.store.documents import DocumentsMixin
from models._private.facts.store.entities import EntitiesMixin
from models._private.facts.store.graph import GraphQueriesMixin
from models._private.facts.store.jobs import IngestJobsMixin
from models._private.facts.store.temporal import TemporalFactsMixin

__all__ = ["READ_TIMEOUT_S", "FactStore"]

READ_TIMEOUT_S = 10.0  # default time bound of one read (FactStore's read_timeout_s)

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
CREATE TABLE IF NOT EXISTS extraction_attempts (  -- documents in a batch the extractor failed on
    document_id TEXT PRIMARY KEY REFERENCES documents(id) ON DELETE CASCADE,
    failures INTEGER NOT NULL  -- times it failed alone, the extractor having answered before it
);
"""


class FactStore(DocumentsMixin, IngestJobsMixin, EntitiesMixin, TemporalFactsMixin, GraphQueriesMixin):
    """Documents, entities and facts of one namespace in one SQLite file.

    Every public method is one transaction: it happens whole or not at all, and has happened
    (on disk) when it returns, or, inside `batch`, when the batch ends. Methods are safe to
    call from several threads.

    Args:
        path: The database file (made with its directory if missing).
        config: Functional predicates and resolution thresholds.
        clock: Seconds since the epoch; tests pass a fake one.
        read_timeout_s: Longest a read may take before it is stopped (`FactsReadTimeoutError`).
    """

    def __init__(
        self,
        path: str,
        config: FactsConfig | None = None,
        clock: Any = time.time,
        read_timeout_s: float = READ_TIMEOUT_S,
    ):
        self.config = config or FactsConfig()
        self.clock = clock
        self.read_timeout_s = read_timeout_s
        private_dir(os.path.dirname(os.path.abspath(path)))
        self._path = path
        self._writer: int | None = None  # the thread in a write transaction, if any
        self._batched = False  # in `batch`: each write a savepoint of its transaction
        self._local = threading.local()  # each thread's read connection
        self._readers: list[sqlite3.Connection] = []
        self._db = sqlite3.connect(private_file(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._lock = threading.RLock()
        self._reload_names()

    def close(self) -> None:
        with self._lock:
            for reader in self._readers:
                reader.close()
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
            if self._db.in_transaction and self._batched:  # a call in `batch`: undone alone
                with self._savepoint():
                    yield self._db
                return
            if self._db.in_transaction:  # nested in a caller's transaction: part of it
                yield self._db
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._writer = threading.get_ident()
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back by itself
                    self._db.execute("ROLLBACK")
                self._reload_names()  # names added in the rolled-back transaction are gone
                raise
            finally:
                self._writer = None

    @contextlib.contextmanager
    def _savepoint(self) -> Iterator[None]:
        self._db.execute("SAVEPOINT call")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK TO call")
            self._db.execute("RELEASE call")
            self._reload_names()  # names the call added are gone
            raise
        self._db.execute("RELEASE call")

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Several writes of this thread in one transaction, committed (one sync to disk) when
        the block ends: none of them is seen by a reader, nor survives a crash, before that,
        and all are when the block has ended; an exception out of the block undoes them all.
        Each write inside is still whole or nothing: one that raises is undone alone (a
        savepoint), and the block may go on. Other threads' writes wait for the block."""
        with self._transaction():
            self._batched = True
            try:
                yield
            finally:
                self._batched = False

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A connection to read from: one snapshot of the store, off the writer's lock (WAL lets
        readers and the writer go on side by side), stopped after `read_timeout_s`. Inside the
        calling thread's own write transaction, that transaction (so it sees its own writes).

        Raises:
            FactsReadTimeoutError: the read ran past `read_timeout_s`.
        """
        if self._writer == threading.get_ident():
            yield self._db
            return
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA query_only = ON")
            self._local.db = db
            self._readers.append(db)  # atomic; not under the writer's lock, which a batch holds long
        self._bound(db)  # each read its own bound, also one nested in a `snapshot`
        if db.in_transaction:  # nested in this thread's read: part of it
            with self._timed_out():
                yield db
            return
        db.execute("BEGIN")  # one snapshot for every statement of the read
        try:
            with self._timed_out():
                yield db
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.set_progress_handler(None, 0)

    def _bound(self, db: sqlite3.Connection) -> None:
        """Stops the statements of `db` that run past `read_timeout_s` from now."""
        deadline = time.monotonic() + self.read_timeout_s
        db.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)

    @contextlib.contextmanager
    def _timed_out(self) -> Iterator[None]:
        """Raises a statement stopped by `_bound` as FactsReadTimeoutError."""
        try:
            yield
        except sqlite3.OperationalError as e:
            if "interrupted" in str(e):
                raise FactsReadTimeoutError(self.read_timeout_s) from None
            raise

    def snapshot(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One read transaction for several reads (a search's): every read of this thread
        inside it joins it, so they see one state of the store and pay for one BEGIN. Each
        read is bounded by `read_timeout_s` on its own, not the work between them.

        Raises:
            FactsReadTimeoutError: a read inside ran past `read_timeout_s`.
        """
        return self._reading()

    def _reload_names(self) -> None:
        """The in-memory name index, read anew from the database."""
        self._names = NameIndex(self.config.fuzzy_min_ratio)
        for entity_id, type_, name in self._db.execute("SELECT id, type, name FROM entities"):
            self._names.add(type_, normalise(name), entity_id)
        query = "SELECT a.entity_id, e.type, a.norm FROM aliases a JOIN entities e ON e.id = a.entity_id"
        for entity_id, type_, norm in self._db.execute(query):
            self._names.add(type_, norm, entity_id)

    def stats(self) -> dict[str, int]:
        with self._reading() as db:
            tables = ("documents", "entities", "facts")
            count = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
        return count
