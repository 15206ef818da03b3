"""Lexical index: BM25 from tantivy, with namespace and tier filters.

Why tantivy: it is a maintained Rust search library (the engine under Quickwit) with real
incremental adds and deletes, BM25 scoring with block-max WAND (top-k in well under a
millisecond at 10^5 documents), and on-disk or in-RAM indexes. bm25s scores fast too but
bakes IDF into a matrix built once, with no incremental add (bm25s#5), so every write would
mean rebuilding the whole index; rank_bm25 scores every document per query in Python; SQLite
FTS5 measured 190 ms per query here on 10^5 documents with common terms.

Correctness as the corpus changes: an added document updates document counts, IDF and average
length at the next commit, so scores after adds equal those of an index built from scratch.
A deleted document is excluded from results at once, but tantivy keeps counting it in term
statistics until its segment is merged, which the Python API cannot force. So the index counts
deletes since it was last built, and `rebuild` (called by the memory's compaction, and
automatically past `stale_ratio`) rewrites it from the live documents, after which scores again
equal a from-scratch index. Between the two, ranking uses IDF from a corpus a few deleted
documents larger; no deleted document is ever returned.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable

import tantivy

__all__ = ["LexicalIndex"]

ANALYZER = "en_bm25"


def _schema() -> tantivy.Schema:
    sb = tantivy.SchemaBuilder()
    sb.add_text_field("id", stored=True, tokenizer_name="raw")
    sb.add_text_field("ns", stored=False, tokenizer_name="raw")
    sb.add_text_field("tier", stored=False, tokenizer_name="raw")
    sb.add_text_field("text", stored=False, tokenizer_name=ANALYZER)
    return sb.build()


def _analyzer() -> tantivy.TextAnalyzer:
    # Lowercased words, English stop words dropped, Porter-stemmed: the usual BM25 setup.
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stopword("english"))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


class LexicalIndex:
    """Documents (id, namespace, tier, text) searched by BM25.

    Args:
        path: Directory of an on-disk index (created if missing); None keeps it in RAM.
        stale_ratio: Rebuild once deletes since the last build exceed this share of documents.
    """

    def __init__(self, path: str | None = None, stale_ratio: float = 0.02):
        self.schema = _schema()
        self.stale_ratio = stale_ratio
        self._tmp = None
        if path is None:
            self._tmp = path = tempfile.mkdtemp(prefix="swarmray-bm25-")
        self.path = path
        os.makedirs(path, exist_ok=True)
        self._open(reuse=tantivy.Index.exists(path))
        self.deleted_since_build = 0
        self._ids: set[str] = set(self._all_ids())

    def _open(self, reuse: bool) -> None:
        self.index = tantivy.Index(self.schema, path=self.path, reuse=reuse)
        self._analyzer = _analyzer()
        self.index.register_tokenizer(ANALYZER, self._analyzer)
        self.writer = self.index.writer(heap_size=50_000_000, num_threads=1)
        self.index.reload()

    @property
    def num_docs(self) -> int:
        """Live documents."""
        return self.index.searcher().num_docs

    def upsert(self, docs: Iterable[tuple[str, str, str, str]]) -> None:
        """Adds or replaces documents given as (id, namespace, tier, text)."""
        for doc_id, ns, tier, text in docs:
            if doc_id in self._ids:  # an update: the old version counts as a delete
                self.writer.delete_documents_by_term("id", doc_id)
                self.deleted_since_build += 1
            self.writer.add_document(tantivy.Document(id=doc_id, ns=ns, tier=tier, text=text))
            self._ids.add(doc_id)
        self._commit()

    def delete(self, ids: Iterable[str]) -> None:
        """Removes documents by id; they stop matching at once."""
        for doc_id in ids:
            if doc_id in self._ids:
                self.writer.delete_documents_by_term("id", doc_id)
                self._ids.discard(doc_id)
                self.deleted_since_build += 1
        self._commit()

    def _all_ids(self) -> list[str]:
        searcher = self.index.searcher()
        if not searcher.num_docs:
            return []
        hits = searcher.search(tantivy.Query.all_query(), limit=searcher.num_docs, count=False).hits
        return [searcher.doc(addr)["id"][0] for _, addr in hits]

    def _commit(self) -> None:
        self.writer.commit()
        self.index.reload()

    @property
    def stale(self) -> bool:
        """Whether deletes since the last build have passed `stale_ratio`."""
        return self.deleted_since_build > self.stale_ratio * max(1, self.num_docs)

    def rebuild(self, docs: Iterable[tuple[str, str, str, str]]) -> None:
        """Rewrites the index from the live documents, so term statistics are exact again."""
        self.writer = None
        self.index = None
        shutil.rmtree(self.path, ignore_errors=True)
        os.makedirs(self.path, exist_ok=True)
        self._open(reuse=False)
        self._ids = set()
        for doc_id, ns, tier, text in docs:
            self.writer.add_document(tantivy.Document(id=doc_id, ns=ns, tier=tier, text=text))
            self._ids.add(doc_id)
        self._commit()
        self.deleted_since_build = 0

    def search(
        self, query: str, k: int, namespaces: list[str] | None = None, tiers: list[str] | None = None
    ) -> list[tuple[str, float]]:
        """The k best (id, BM25 score) pairs for `query`, within the given namespaces and tiers."""
        # The query is analyzed like the documents and each token becomes a term clause, as
        # Lucene's parser does (a repeated token counts twice); no query syntax is interpreted.
        terms = self._analyzer.analyze(query)
        if not terms:
            return []
        should = [
            (tantivy.Occur.Should, tantivy.Query.term_query(self.schema, "text", t, "freq")) for t in terms
        ]
        clauses = [(tantivy.Occur.Must, tantivy.Query.boolean_query(should))]
        if namespaces is not None:
            clauses.append((tantivy.Occur.Must, tantivy.Query.term_set_query(self.schema, "ns", namespaces)))
        if tiers is not None:
            clauses.append((tantivy.Occur.Must, tantivy.Query.term_set_query(self.schema, "tier", tiers)))
        searcher = self.index.searcher()
        hits = searcher.search(tantivy.Query.boolean_query(clauses), limit=k, count=False).hits
        return [(searcher.doc(addr)["id"][0], float(score)) for score, addr in hits]

    def close(self) -> None:
        """Releases the writer; deletes a RAM index's temporary directory."""
        self.writer = None
        self.index = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
