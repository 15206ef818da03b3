"""Facts data that must not be lost or come back: times of any year, bad rows that must not stop
a namespace from opening, documents deleted and posted again while background work reads them,
and the memory's log that must not keep deleted text. Real SQLite, FAISS, tantivy and files."""

import os
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from models._private.facts.base import FactsBase
from models._private.facts.schema import DocumentIn, Extraction, FactIn, FactsConfig
from models._private.facts.search import _held
from models._private.facts.store.core import FactStore
from models._private.memory.hybrid import HybridMemory, MemoryConfig, Record
from models._private.retrieval.embedder import Embedder
from models._private.retrieval.lexical import LexicalIndex
from serve._private.facts.protocol import FactsBody

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def at(year: int, month: int = 1, day: int = 1) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def base(path, embedder, **kw) -> FactsBase:
    return FactsBase(str(path), embedder=embedder, **kw)


@pytest.fixture
def store(tmp_path):
    s = FactStore(str(tmp_path / "facts.sqlite"), FactsConfig(), clock=lambda: at(2030).timestamp())
    yield s
    s.close()


# -- item 5: times of any year read back as they were stored ------------------------------------

# pydantic reads an epoch number above 2e10 (or below -2e10) as milliseconds: these are the
# years on either side of that line, and the ends of what a datetime holds.
TIMES = [
    at(1066, 10, 14),
    at(2700),
    EPOCH + timedelta(seconds=2e10 + 1),  # 2603-10-11, just past pydantic's line
    EPOCH - timedelta(seconds=2e10 + 1),  # 1336-03-23, just before it
    at(1),
    datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
    datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
]


@pytest.mark.parametrize("when", TIMES, ids=lambda t: t.isoformat())
def test_a_facts_times_read_back_as_stored_in_any_year(store, when):
    end = when + timedelta(days=1) if when.year < 9999 else None
    [fact_id] = store.add_facts(
        [FactIn(subject="Harold", predicate="fought_at", object="Hastings", valid_at=when, invalid_at=end)]
    )
    fact = store.fact(fact_id)
    assert (fact.valid_at, fact.invalid_at) == (when, end)
    assert [f.valid_at for f in store.facts_by_id([fact_id])] == [when]
    assert [f.id for f in store.facts(as_of=when)] == [fact_id]  # SQL: held from valid_at on
    assert _held(fact, when)  # and Python agrees
    if when.year > 1:
        before = when - timedelta(seconds=1)
        assert store.facts(as_of=before) == [] and not _held(fact, before)


# -- item 1: a blank fact sentence is refused at the door, and one bad row never stops a namespace


@pytest.mark.parametrize("field", ["sentence", "subject", "predicate", "object"])
def test_a_blank_fact_sentence_or_name_is_refused_naming_the_field(field):
    fact = {"subject": "Ada", "predicate": "works_for", "object": "Acme", "sentence": "Ada works for Acme."}
    with pytest.raises(ValidationError) as e:
        FactsBody.model_validate({"facts": [fact | {field: " \n\t"}]})
    [error] = e.value.errors()
    assert error["loc"] == ("facts", 0, field) and "blank" in error["msg"]


def test_a_store_holding_a_blank_fact_still_opens_indexes_the_rest_and_reports_it(tmp_path, embedder):
    kb = base(tmp_path, embedder)
    (good,) = kb.add_facts([FactIn(subject="Ada", predicate="works_for", object="Acme")])
    kb.close()
    # Rows the memory cannot index, as an earlier version let in, and a good one it lacks.
    db = sqlite3.connect(tmp_path / "facts.sqlite")
    for fact_id, sentence in (("blank", " "), ("later", "Ada lives in London")):
        db.execute(
            "INSERT INTO facts SELECT ?, subject_id, 'lives_in', object_id, object_value, ?, confidence, "
            "extractor, valid_at, invalid_at, created_at, expired_at, stated_invalid_at, ended_by, asserted, "
            "valid_stated FROM facts WHERE id = ?",
            (fact_id, sentence, good),
        )
    db.commit()
    db.close()

    reopened = base(tmp_path, embedder)  # raised MemoryInputError before: the namespace was lost
    assert reopened.stats()["unindexable"] == 1
    assert {h.fact.id for h in reopened.search("Where does Ada live?", 5, "facts").facts} >= {"later"}
    assert "fact:blank" not in reopened.memory.records
    (more,) = reopened.add_facts([FactIn(subject="Bo", predicate="works_for", object="Initech")])
    assert "fact:" + more in reopened.memory.records
    reopened.close()


# -- item 2: a document deleted and posted again while background work reads it ------------------

V1 = DocumentIn(id="x", text="Ada Lovelace wrote the first program.", source="v1")
V2 = DocumentIn(id="x", text="Grace Hopper wrote the first compiler.", source="v2")


class FirstWordExtractor:
    """Reads one fact a document: its first two words say the rest (enough to tell two texts'
    facts apart); `before_return` runs between reading and returning, as another caller would."""

    name = "test"

    def __init__(self):
        self.before_return = None

    def extract_many(self, texts):
        out = [self.extract(t) for t in texts]
        if self.before_return is not None:
            self.before_return()
        return out

    def extract(self, text):
        words = text.rstrip(".").split()
        fact = FactIn(subject=" ".join(words[:2]), predicate="wrote", object=" ".join(words[3:]), spans=[])
        return Extraction(extractor=self.name, facts=[fact])


def repost(kb, index):
    kb.delete_document("x")
    kb.add_documents([V2], index=index)


@pytest.mark.parametrize("index", [False, True], ids=["reposted_unindexed", "reposted_indexed"])
def test_a_document_reposted_while_its_old_version_is_embedded_is_indexed_as_the_new_one(
    tmp_path, embedder, index
):
    kb = base(tmp_path, embedder)
    kb.add_documents([V1], index=False)
    embed = kb.memory.embed

    def embed_then_repost(texts):  # index_pending took version 1 and embeds it outside the lock
        vectors = embed(texts)
        repost(kb, index)
        return vectors

    kb.memory.embed = embed_then_repost
    kb.index_pending()
    kb.memory.embed = embed
    while kb.index_pending():
        pass
    assert kb.memory.records["doc:x"].text == V2.text
    assert kb.store.document_ids(indexed=False) == set()
    kb.close()
    reopened = base(tmp_path, embedder)
    assert reopened.memory.records["doc:x"].text == V2.text
    assert [h.document_id for h in reopened.search("Grace Hopper compiler", 1, "passages").passages] == ["x"]
    reopened.close()


def test_a_document_reposted_while_its_old_version_is_extracted_gets_the_new_ones_facts(tmp_path, embedder):
    extractor = FirstWordExtractor()
    kb = base(tmp_path, embedder, extractor=extractor)
    kb.add_documents([V1])
    extractor.before_return = lambda: repost(kb, True)
    kb.extract_pending()  # read version 1; version 2 stands under its id when the facts come back
    extractor.before_return = None
    assert kb.store.document("x").extraction == "pending"  # version 2 is still to be read
    kb.extract_pending()
    facts = kb.store.facts(include_history=True)
    assert [(f.subject, f.object) for f in facts] == [("Grace Hopper", "the first compiler")]
    assert [p["document_id"] for p in facts[0].provenance] == ["x"]
    assert kb.store.find_entity("Ada Lovelace") == []
    kb.close()


class FailingFirstExtractor(FirstWordExtractor):
    """Fails on version 1's text, as a document the extractor cannot read (not an outage); the
    batch call fails, so each document is then read alone (`FactsBase._read`)."""

    def extract_many(self, texts):
        raise ValueError("cannot read this batch")

    def extract(self, text):
        if text == V1.text:
            if self.before_return is not None:
                self.before_return()
            raise ValueError("cannot read version 1")
        return super().extract(text)


def test_a_failure_reading_an_old_version_does_not_fail_the_document_posted_again_under_its_id(
    tmp_path, embedder
):
    extractor = FailingFirstExtractor()
    kb = base(tmp_path, embedder, extractor=extractor)
    kb.add_documents([V1])
    extractor.before_return = lambda: repost(kb, True)
    kb.extract_pending()  # version 1 failed; version 2 stood under its id when it was marked
    extractor.before_return = None
    assert kb.store.document("x").extraction == "pending"  # marked failed before: never read
    kb.extract_pending()
    assert kb.store.document("x").extraction == "done"
    assert [(f.subject, f.object) for f in kb.store.facts()] == [("Grace Hopper", "the first compiler")]
    kb.close()


def test_reopening_reindexes_a_passage_whose_document_was_replaced_under_its_id(tmp_path, embedder):
    kb = base(tmp_path, embedder)
    kb.add_documents([V1, DocumentIn(id="y", text="Alan Turing wrote on computable numbers.")])
    kb.store.delete_document("x")  # a crash between the store's writes and the memory's
    kb.store.add_documents([V2])
    unchanged = kb.memory.records["doc:y"].updated_at
    kb.close()
    reopened = base(tmp_path, embedder)  # kept version 1's passage before: it compared ids only
    assert reopened.memory.records["doc:x"].text == V2.text
    assert reopened.memory.records["doc:x"].metadata["source"] == "v2"
    assert reopened.memory.records["doc:y"].updated_at == unchanged  # the same one is left alone
    reopened.close()


# -- item 4: the memory's log is compacted, and deleted text leaves the disk ---------------------


def files_holding(root, needle: bytes) -> list[str]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and needle in path.read_bytes().lower():
            found.append(str(path.relative_to(root)))
    return found


def test_deleted_text_leaves_the_memorys_files_once_deleted_records_outnumber_the_live(tmp_path, embedder):
    kb = base(tmp_path, embedder)
    kb.add_documents([DocumentIn(id="keep", text="Ada Lovelace wrote the first program.")])
    secrets = [DocumentIn(id=f"s{i}", text=f"Zorblaxian vault code {i} is hidden here.") for i in range(2)]
    kb.add_documents(secrets)
    assert files_holding(tmp_path / "memory", b"zorblaxian")  # in the log: what the test looks for
    for doc in secrets:
        kb.delete_document(doc.id)
    # Two deleted, one live: compacted (the log kept every deleted text before, for ever).
    assert files_holding(tmp_path / "memory", b"zorblaxian") == []
    assert kb.memory.wal.read() == []
    kb.close()
    reopened = base(tmp_path, embedder)
    assert set(reopened.memory.records) == {"doc:keep"}
    assert [h.document_id for h in reopened.search("Ada program", 2, "passages").passages] == ["keep"]
    reopened.close()


def test_a_growing_log_is_compacted_past_its_size_so_a_start_replays_little(tmp_path, embedder):
    config = FactsConfig(compact_log_after_mb=0.001)  # about one passage's log entry
    kb = base(tmp_path, embedder, config=config)
    for i in range(20):
        kb.add_documents([DocumentIn(id=f"d{i}", text=f"Document number {i} is about topic {i}.")])
    # Compacted at doubling sizes: the log holds the last few writes, a snapshot the rest.
    assert len(kb.memory.wal.read()) < 10
    kb.close()
    reopened = base(tmp_path, embedder, config=config)
    assert set(reopened.memory.records) == {f"doc:d{i}" for i in range(20)}
    reopened.close()


def test_a_snapshot_rebuilds_the_lexical_index_after_any_delete_so_no_deleted_term_stays(tmp_path, embedder):
    memory = HybridMemory(["ns"], MemoryConfig(path=str(tmp_path / "memory")), embedder)
    records = [Record(id=f"k{i}", namespace="ns", text=f"ordinary words number {i}") for i in range(60)]
    memory.upsert([*records, Record(id="s", namespace="ns", text="Zorblaxian vault code")])
    memory.delete(["s"])  # one delete in 61: too few for the index to call itself stale
    final = memory.snapshot()
    assert memory.lexical.index.searcher().terms_with_prefix("text", "zorbl") == []
    copy = LexicalIndex(os.path.join(final, "lexical"))
    assert copy.index.searcher().terms_with_prefix("text", "zorbl") == [] and copy.num_docs == 60
    memory.close()
