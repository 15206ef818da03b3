"""Ingest jobs in the facts store: documents waiting for an extractor or for the search index,
marking them done or failed, and how far a job (or the whole store) is."""

from __future__ import annotations

from models._private.core.errors import FactsNotFoundError
from models._private.facts.schema import Document
from models._private.facts.store.rows import id_chunks

__all__ = ["IngestJobsMixin"]


class IngestJobsMixin:
    """The ingest-job part of `FactStore` (`core`), which supplies `_db`, `_lock` and
    `_transaction`."""

    def pending_documents(self, limit: int) -> list[Document]:
        """Up to `limit` documents waiting for an extractor, oldest first."""
        with self._reading() as db:
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM documents WHERE extraction = 'pending' ORDER BY ingested_at LIMIT ?",
                    (limit,),
                )
            ]
            return self.documents(ids)  # in the same read: one query, and every one still there

    def unindexed_documents(self, limit: int) -> list[Document]:
        """Up to `limit` documents stored with `indexed` False and not marked since, oldest first."""
        with self._reading() as db:
            query = "SELECT id FROM documents WHERE indexed = 0 ORDER BY ingested_at LIMIT ?"
            ids = [r[0] for r in db.execute(query, (limit,))]
            return self.documents(ids)

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
        with self._reading() as db:
            rows = db.execute(
                "SELECT extraction, count(*), sum(indexed) FROM documents WHERE job = ? GROUP BY extraction",
                (job,),
            ).fetchall()
        if not rows:
            raise FactsNotFoundError("job", job)
        states = {"pending": 0, "done": 0, "failed": 0, "none": 0, **{r[0]: r[1] for r in rows}}
        return {"documents": sum(r[1] for r in rows), "indexed": sum(r[2] for r in rows), **states}

    def extraction_failed(self, document_id: str, reason: str, read: Document | None = None) -> None:
        """Marks a document whose extraction failed: it stays searchable as a passage, and is
        not tried again by `pending_documents`. `read`: the document as the extractor read it;
        unless the stored one says the same, another was posted under its id since (deleted and
        posted again) and waits its own reading, so nothing is marked."""
        with self._transaction() as db:
            if read is not None and not self._stored_as(document_id, read):
                return
            db.execute(
                "UPDATE documents SET extraction = 'failed', extraction_error = ? WHERE id = ?",
                (reason[:1000], document_id),
            )

    def extraction_suspects(self, document_ids: list[str]) -> set[str]:
        """Those of `document_ids` that were in a batch the extractor failed on (read alone)."""
        found: set[str] = set()
        with self._reading() as db:
            for part, marks in id_chunks(document_ids):
                query = f"SELECT document_id FROM extraction_attempts WHERE document_id IN ({marks})"
                found |= {r[0] for r in db.execute(query, part)}
        return found

    def suspect_extraction(self, document_ids: list[str]) -> None:
        """Records that these documents were in a batch the extractor failed on: any of them
        may be what broke it, so each is read alone from now on."""
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO extraction_attempts SELECT id, 0 FROM documents WHERE id = ?",
                [(d,) for d in document_ids],
            )

    def extraction_attempt_failed(
        self, document_id: str, reason: str, max_attempts: int, read: Document | None = None
    ) -> bool:
        """Counts a failure of the extractor on this document alone (the extractor having
        answered before it); at `max_attempts` the document is marked failed with `reason`.
        Returns whether it was; until then its `extraction_error` says how many failed.
        `read`: as for `extraction_failed` (a document posted again since is not counted)."""
        with self._transaction() as db:
            if read is not None and not self._stored_as(document_id, read):
                return False
            db.execute(  # a document deleted meanwhile is not counted
                "INSERT INTO extraction_attempts SELECT id, 1 FROM documents "
                "WHERE id = ? AND extraction = 'pending' "
                "ON CONFLICT (document_id) DO UPDATE SET failures = failures + 1",
                (document_id,),
            )
            row = db.execute("SELECT failures FROM extraction_attempts WHERE document_id = ?", (document_id,))
            failures = (row.fetchone() or (0,))[0]
            failed = failures >= max_attempts
            state, said = (
                ("failed", f"gave up after {failures} attempts: ")
                if failed
                else ("pending", f"attempt {failures} of {max_attempts} failed: ")
            )
            db.execute(
                "UPDATE documents SET extraction = ?, extraction_error = ? "
                "WHERE id = ? AND extraction = 'pending'",
                (state, (said + reason)[:1000], document_id),
            )
        return failed

    def extraction_progress(self) -> dict[str, int]:
        """Documents per extraction state: pending, done, failed, none."""
        with self._reading() as db:
            rows = db.execute("SELECT extraction, count(*) FROM documents GROUP BY extraction")
            return {"pending": 0, "done": 0, "failed": 0, "none": 0, **dict(rows.fetchall())}
