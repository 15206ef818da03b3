"""Facts data that must not be lost or come back: times of any year, bad rows that must not stop
a namespace from opening, documents deleted and posted again while background work reads them,
and the memory's log that must not keep deleted text. Real SQLite, FAISS, tantivy and files."""

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from models._private.facts.base import FactsBase
from models._private.facts.schema import FactIn, FactsConfig
from models._private.facts.search import _held
from models._private.facts.store.core import FactStore
from models._private.retrieval.embedder import Embedder
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
