"""Bi-temporal facts in the facts store: storing a fact (the same statement over a time it
already covers is more support, not a second fact), the chains of a functional predicate
(each fact holds until the next begins), merging duplicates after an entity merge,
invalidating and deleting facts, and reading facts as of a time or with their history."""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
from datetime import datetime
from typing import Any

from models._private.core.errors import FactsInputError, FactsNotFoundError
from models._private.facts.schema import Fact, FactIn, Span, to_epoch
from models._private.facts.store.rows import (
    FACT_COLUMNS,
    FACT_FIELDS,
    FACT_FROM,
    FOREVER,
    fact_from_row,
    id_chunks,
    make_id,
    provenance_entry,
)

__all__ = ["MAX_FACTS_PAGE", "TemporalFactsMixin"]

MAX_FACTS_PAGE = 1000  # facts one page of `facts_page` holds at most


class TemporalFactsMixin:
    """The fact part of `FactStore` (`core`), which supplies `_db`, `_lock`, `_transaction`,
    `config` (the functional predicates) and `clock`."""

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

    def fact(self, fact_id: str) -> Fact:
        with self._reading() as db:
            return self._fact_row(db, fact_id)

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
        `include_history`; filtered by subject, predicate, or an entity at either end. All of
        them: a reader that may meet many asks `facts_page`."""
        return self.facts_page(
            subject_id=subject_id,
            predicate=predicate,
            entity_id=entity_id,
            as_of=as_of,
            include_history=include_history,
            limit=None,
        )[0]

    def facts_page(
        self,
        *,
        subject_id: str | None = None,
        predicate: str | None = None,
        entity_id: str | None = None,
        as_of: datetime | None = None,
        include_history: bool = False,
        limit: int | None = MAX_FACTS_PAGE,
        cursor: str | None = None,
    ) -> tuple[list[Fact], str | None]:
        """`facts`, at most `limit` of them (None: all) in the order they began, after
        `cursor`; and the cursor of the next page (None: no more). Three queries a page, however
        long (the facts, then their provenance in parts).

        Raises:
            FactsInputError: a cursor this store did not give.
        """
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
        if cursor is not None:
            where.append("(f.valid_at, f.created_at, f.id) > (?, ?, ?)")
            args += _read_cursor(cursor)
        sql = f"SELECT {FACT_COLUMNS}, f.valid_at FROM {FACT_FROM}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY f.valid_at, f.created_at, f.id"
        if limit is not None:
            sql, args = sql + " LIMIT ?", [*args, limit + 1]  # one more: is there a next page?
        with self._reading() as db:
            rows = db.execute(sql, args).fetchall()
            more = limit is not None and len(rows) > limit
            rows = rows[:limit] if more else rows
            spans: dict[str, list[dict[str, Any]]] = {}
            for part, marks in id_chunks([r[0] for r in rows]):
                for fact_id, d, a, b in db.execute(
                    f"SELECT fact_id, document_id, start, end FROM provenance WHERE fact_id IN ({marks}) "
                    "ORDER BY document_id, start",
                    part,
                ):
                    spans.setdefault(fact_id, []).append(provenance_entry(d, a, b))
            facts = [fact_from_row(r[:-1], spans.get(r[0], [])) for r in rows]
        if not more:
            return facts, None
        last = rows[-1]
        return facts, _write_cursor(last[-1], last[FACT_FIELDS.index("created_at")], last[0])

    def facts_by_id(self, fact_ids: list[str]) -> list[Fact]:
        """The facts with these ids that exist, in the order given; two reads in all."""
        found: dict[str, tuple] = {}
        spans: dict[str, list[dict[str, Any]]] = {}
        with self._reading() as db:
            for part, marks in id_chunks(fact_ids):
                for row in db.execute(
                    f"SELECT {FACT_COLUMNS} FROM {FACT_FROM} WHERE f.id IN ({marks})", part
                ):
                    found[row[0]] = row
                for fact_id, d, a, b in db.execute(
                    f"SELECT fact_id, document_id, start, end FROM provenance WHERE fact_id IN ({marks}) "
                    "ORDER BY document_id, start",
                    part,
                ):
                    spans.setdefault(fact_id, []).append(provenance_entry(d, a, b))
        return [fact_from_row(found[f], spans.get(f, [])) for f in fact_ids if f in found]

    def fact_ids(self, except_predicate: str | None = None) -> set[str]:
        """The ids of stored facts, but those on `except_predicate` (to reconcile a search
        index with the store)."""
        with self._reading() as db:
            rows = db.execute("SELECT id FROM facts WHERE predicate IS NOT ?", (except_predicate,))
            return {r[0] for r in rows}

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
            if their_valid <= (stated if stated is not None else FOREVER) and valid <= (
                their_invalid if their_invalid is not None else FOREVER
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
        fact_id = same or make_id()
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
            if first is None or valid > (first[2] if first[2] is not None else FOREVER):
                kept[key] = [fact_id, valid, invalid]
                continue
            db.execute("UPDATE OR IGNORE provenance SET fact_id = ? WHERE fact_id = ?", (first[0], fact_id))
            db.execute("UPDATE facts SET asserted = max(asserted, ?) WHERE id = ?", (asserted, first[0]))
            db.execute("DELETE FROM facts WHERE id = ?", (fact_id,))
        for subject, predicate in {(k[0], k[1]) for k in kept}:
            self._rechain(db, subject, predicate, now)

    def _fact_row(self, db: sqlite3.Connection, fact_id: str) -> Fact:
        row = db.execute(f"SELECT {FACT_COLUMNS} FROM {FACT_FROM} WHERE f.id = ?", (fact_id,)).fetchone()
        if row is None:
            raise FactsNotFoundError("fact", fact_id)
        return self._to_fact(db, row)

    @staticmethod
    def _to_fact(db: sqlite3.Connection, row: tuple) -> Fact:
        spans = db.execute(
            "SELECT document_id, start, end FROM provenance WHERE fact_id = ? ORDER BY document_id, start",
            (row[0],),
        )
        provenance = [provenance_entry(d, s, e) for d, s, e in spans]
        return fact_from_row(row, provenance)


def _write_cursor(valid_at: float, created_at: float, fact_id: str) -> str:
    """Where a page of facts ended, as an opaque token (it holds no more than the order's key)."""
    return base64.urlsafe_b64encode(json.dumps([valid_at, created_at, fact_id]).encode()).decode()


def _read_cursor(cursor: str) -> list[Any]:
    try:
        valid_at, created_at, fact_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        times = (valid_at, created_at)
        if all(isinstance(t, float | int) for t in times) and isinstance(fact_id, str):
            return [*times, fact_id]
    except (ValueError, TypeError, binascii.Error):
        pass
    raise FactsInputError("cursor", "is not a cursor a page of facts ended with")
