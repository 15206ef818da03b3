"""Facts data that must not be lost or come back: times of any year, bad rows that must not stop
a namespace from opening, documents deleted and posted again while background work reads them,
and the memory's log that must not keep deleted text. Real SQLite, FAISS, tantivy and files."""

from datetime import datetime, timedelta, timezone

import pytest

from models._private.facts.schema import FactIn, FactsConfig
from models._private.facts.search import _held
from models._private.facts.store.core import FactStore

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def at(year: int, month: int = 1, day: int = 1) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


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
