"""Documents in and out of the facts store: storing them (with what an extractor read, or
pending for one), adding an extraction later, facts posted with no document, deleting a
document and what only it supports, and reading documents back."""

from __future__ import annotations

import json
import sqlite3

from models._private.core.errors import FactsInputError, FactsNotFoundError
from models._private.facts.schema import Document, DocumentIn, Extraction, FactIn, Span, from_epoch, to_epoch
from models._private.facts.store.rows import document_from_row, id_chunks, make_id, same_content

__all__ = ["DocumentsMixin"]


class DocumentsMixin:
    """The documents part of `FactStore` (`core`), which supplies `_db`, `_lock`,
    `_transaction`, `config` and `clock`."""

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
            id=doc.id or make_id(),
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
        if not same_content(old, doc):
            raise FactsInputError("id", f"another document {doc.id!r} exists already; delete it first")
        if job is not None:
            db.execute("UPDATE documents SET job = ? WHERE id = ?", (job, doc.id))
            return old.model_copy(update={"job": job})
        return old

    def _stored_as(self, document_id: str, read: Document) -> bool:
        # In the caller's transaction: whether the stored document is the one that was read (an
        # id may come back, after a delete, with another document).
        try:
            return same_content(self.document(document_id), read)
        except FactsNotFoundError:
            return False

    def add_extraction(
        self, document_id: str, extraction: Extraction, read: Document | None = None
    ) -> list[str]:
        """Adds what an extractor read from a stored document (extraction runs after a document
        is accepted); returns the ids of the facts it produced or supported.

        Args:
            read: The document as the extractor read it: unless the stored one says the same,
                the extraction is of a document deleted since (its id taken by another).

        Raises:
            FactsNotFoundError: no such document, or not the one `read`.
        """
        with self._transaction() as db:
            row = db.execute(
                "SELECT reference_time, length(text), extraction FROM documents WHERE id = ?", (document_id,)
            )
            found = row.fetchone()
            if found is None or (read is not None and not self._stored_as(document_id, read)):
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

    def document(self, document_id: str) -> Document:
        with self._reading() as db:
            row = db.execute("SELECT * FROM documents WHERE id = ?", (document_id,)).fetchone()
        if row is None:
            raise FactsNotFoundError("document", document_id)
        return document_from_row(row)

    def documents(self, document_ids: list[str]) -> list[Document]:
        """The documents with these ids that exist, in the order given; one read in all."""
        rows: dict[str, tuple] = {}
        with self._reading() as db:
            for part, marks in id_chunks(document_ids):
                for row in db.execute(f"SELECT * FROM documents WHERE id IN ({marks})", part):
                    rows[row[0]] = row
        return [document_from_row(rows[d]) for d in document_ids if d in rows]

    def titles(self) -> list[tuple[str, str]]:
        """(id, title) of every document."""
        with self._reading() as db:
            return db.execute("SELECT id, title FROM documents").fetchall()

    def document_ids(self, indexed: bool | None = None) -> set[str]:
        """Ids of every document, or of those whose passage is (or is not) indexed."""
        query, args = "SELECT id FROM documents", ()
        if indexed is not None:
            query, args = query + " WHERE indexed = ?", (int(indexed),)
        with self._reading() as db:
            return {r[0] for r in db.execute(query, args)}

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
