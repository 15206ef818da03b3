"""How the memory indexes what the facts store holds (a part of `FactsBase`, `base`): a
document's passage record, fact sentences' records, and the reconcile that brings the index back
in line with the store when it is opened."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from models._private.core.errors import MemoryInputError
from models._private.facts.schema import Document
from models._private.facts.spacy_extractor import CO_MENTION
from models._private.memory.schema import Record

__all__ = ["DOC_PREFIX", "FACTS_SPACE", "FACT_PREFIX", "META_PREFIX", "IndexMixin", "filterable_fields"]

DOC_PREFIX, FACT_PREFIX = "doc:", "fact:"  # of the memory record ids of passages and fact sentences
FACTS_SPACE = "/facts"  # suffix of the memory namespace of fact sentences
META_PREFIX = "meta."  # a document's metadata keys in its passage record (beside document_id, source)

log = logging.getLogger(__name__)


class IndexMixin:
    """The index part of `FactsBase` (`base`), which supplies `store`, `memory`, `namespace`,
    `_spaces` and `unindexable` (record id -> why the memory refused it)."""

    def _passage(self, doc: Document) -> Record:
        text = f"{doc.title}\n{doc.text}" if doc.title else doc.text
        return Record(
            id=DOC_PREFIX + doc.id,
            namespace=self.namespace,
            text=text,
            metadata={"document_id": doc.id, **filterable_fields(doc)},
        )

    def _fact_records(self, fact_ids: Any) -> list[Record]:
        """The index records of facts' sentences; co-mention facts have none (graph edges only)."""
        facts = self.store.facts_by_id(list(dict.fromkeys(fact_ids)))
        return [
            Record(
                id=FACT_PREFIX + f.id,
                namespace=self._spaces["fact"],
                text=f.sentence,
                metadata={"fact_id": f.id},
            )
            for f in facts
            if f.predicate != CO_MENTION
        ]

    def _index_facts(self, fact_ids: Any, embedded: dict[str, np.ndarray] | None = None) -> list[str]:
        """Indexes the sentences of these facts that the index lacks, or holds otherwise (a fact
        that gains support from one more document is there already); returns the ids of the
        records it added anew.

        Args:
            embedded: Vectors of sentences (`memory.embed`'s) by sentence, made beforehand;
                the other sentences are embedded here.
        """
        held = self.memory.records
        records = [
            r
            for r in self._fact_records(fact_ids)
            if r.id not in held or held[r.id].namespace != r.namespace or not _same_record(held[r.id], r)
        ]
        vectors = dict(embedded or {})
        if missing := list(dict.fromkeys(r.text for r in records if r.text not in vectors)):
            vectors.update(zip(missing, self.memory.embed(missing), strict=True))
        new = [r.id for r in records if r.id not in held]
        self._index(records, embedded=[vectors[r.text] for r in records])
        return new

    def _index(self, records: list[Record], embedded: list[np.ndarray] | None = None) -> list[str]:
        """Upserts `records` into the memory; returns the ids it took.

        A record the memory refuses (a blank text an earlier version let into the store, or a
        text longer than a lowered `max_text_chars`) is skipped, logged and kept in
        `unindexable`, and the others go in: one bad row never stops the rest, nor a namespace
        from opening. It stays in the store, unsearchable.
        """
        if not records:
            return []
        try:
            return self.memory.upsert(records, embedded=embedded)
        except MemoryInputError:
            pass  # find the bad ones: each record alone
        taken = []
        for i, r in enumerate(records):
            try:
                taken += self.memory.upsert([r], embedded=None if embedded is None else [embedded[i]])
            except MemoryInputError as e:
                log.warning("facts namespace %r: %s is not indexed: %s", self.namespace, r.id, e)
                self.unindexable[r.id] = str(e)
        return taken

    def _reconcile(self) -> None:
        """Indexes what the store holds and the memory lacks, and drops what the store no
        longer holds (a crash may have come between the two writes), or holds with other
        content (a document deleted and posted again under its id)."""
        indexed = set(self.memory.records)
        # Co-mention facts are never indexed: they are neither stale records nor gaps.
        documents, facts = self.store.document_ids(), self.store.fact_ids(except_predicate=CO_MENTION)
        kept = {DOC_PREFIX: documents, FACT_PREFIX: facts}
        stale = self._replaced([d for d in documents if DOC_PREFIX + d in indexed]) | {
            rid
            for rid in indexed
            for prefix, space in ((DOC_PREFIX, "passage"), (FACT_PREFIX, "fact"))
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
        missing = [d for d in documents - waiting if DOC_PREFIX + d not in indexed]
        self._index([self._passage(d) for d in self.store.documents(missing)])
        if done := [d for d in waiting if DOC_PREFIX + d in indexed]:  # indexed, then a crash
            self.store.mark_indexed(done)
        self._index_facts(f for f in facts if FACT_PREFIX + f not in indexed)

    def _replaced(self, document_ids: list[str], batch: int = 1000) -> set[str]:
        """The passage records of these documents that say other than the documents do now (a
        fact's id is never given again, so only passages can be replaced under theirs)."""
        replaced = set()
        for i in range(0, len(document_ids), batch):  # not every text in memory at once
            for doc in self.store.documents(document_ids[i : i + batch]):
                record = self._passage(doc)
                if not _same_record(self.memory.records[record.id], record):
                    replaced.add(record.id)
        return replaced


def _same_record(a: Record, b: Record) -> bool:
    return (a.text, a.metadata) == (b.text, b.metadata)


def filterable_fields(doc: Document) -> dict[str, Any]:
    """What filters see of a document: its source and its scalar metadata (under `META_PREFIX`)."""
    scalars = {META_PREFIX + k: v for k, v in doc.metadata.items() if isinstance(v, (str, int, float, bool))}
    return {"source": doc.source, **scalars}
