"""Documents, facts and search together: the real embedder, spaCy, SQLite and the memory's
FAISS and tantivy indexes, on files in a temporary directory."""

import threading
from datetime import datetime, timezone

import pytest

from models._private.core.errors import ExtractorUnreachableError, FactsInputError
from models._private.facts import search
from models._private.facts.base import FactsBase
from models._private.facts.schema import DocumentIn, Extraction, FactIn, FactsConfig
from models._private.facts.search import CHAIN_SHARE
from models._private.facts.spacy_extractor import SpacyExtractor
from models._private.retrieval.embedder import Embedder

DOCS = {
    "curie": "Marie Curie was born in Warsaw. She studied physics in France.",
    "warsaw": "Warsaw lies on the Vistula in Poland. The city is known for its Old Town.",
    "berlin": "Berlin is the capital of Germany and sits on the Spree.",
}


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.fixture(scope="module")
def extractor():
    return SpacyExtractor()


def base(path, embedder, extractor, **kw):
    config = FactsConfig(functional_predicates=["works_for"])
    return FactsBase(str(path), config=config, embedder=embedder, extractor=extractor, **kw)


def test_a_document_is_searchable_at_once_and_its_facts_after_extraction(tmp_path, embedder, extractor):
    kb = base(tmp_path, embedder, extractor)
    kb.add_document(DocumentIn(id="curie", text=DOCS["curie"]))
    assert kb.store.extraction_progress()["pending"] == 1
    hits = kb.search("Where was Marie Curie born?", 3, "passages").passages
    assert [h.document_id for h in hits] == ["curie"]
    assert kb.search("Curie born", 3, "facts").facts == []  # nothing extracted yet

    assert kb.extract_pending() == 1 and kb.store.extraction_progress() == {
        "pending": 0,
        "done": 1,
        "failed": 0,
        "none": 0,
    }
    (top, *_) = kb.search("Where was Marie Curie born?", 3, "facts").facts
    assert (top.fact.subject, top.fact.predicate, top.fact.object) == ("Marie Curie", "born_in", "Warsaw")
    assert top.fact.provenance[0]["document_id"] == "curie"
    kb.close()


def test_distance_rerank_reaches_the_second_hop_through_the_querys_entities(tmp_path, embedder, extractor):
    kb = base(tmp_path, embedder, extractor, graph_rerank="distance", graph_weight=0.5)
    for doc_id, text in DOCS.items():
        kb.add_document(DocumentIn(id=doc_id, text=text))
    kb.extract_pending()
    query = "What is the birthplace of Marie Curie known for?"
    hybrid = {h.document_id: h for h in kb.search(query, 3, "hybrid").passages}
    graph = kb.search(query, 3, "graph", depth=1)
    (curie,) = kb.store.find_entity("Marie Curie", "PERSON")
    (warsaw,) = kb.store.find_entity("Warsaw", "GPE")
    assert graph.seeds == [curie.id]
    by_doc = {h.document_id: h for h in graph.passages}
    # Warsaw is one fact away from the seed, and its document gets that distance's bonus.
    assert by_doc["curie"].distance == 0 and by_doc["warsaw"].distance == 1
    assert by_doc["warsaw"].scores["graph"] == pytest.approx(0.25)
    assert by_doc["warsaw"].score > hybrid["warsaw"].score and hybrid["warsaw"].scores.get("graph", 0) == 0
    assert by_doc["berlin"].scores["graph"] < by_doc["warsaw"].scores["graph"]
    assert {e.id for e in graph.entities} >= {curie.id, warsaw.id}  # the subgraph that links them
    kb.close()


def test_facts_search_reads_the_past_with_as_of(tmp_path, embedder):
    kb = base(tmp_path, embedder, None)
    kb.add_facts(
        [
            FactIn(
                subject="Ada",
                predicate="works_for",
                object="Acme",
                valid_at=datetime(2020, 1, 1, tzinfo=timezone.utc),
            )
        ]
    )
    kb.add_facts(
        [
            FactIn(
                subject="Ada",
                predicate="works_for",
                object="Globex",
                valid_at=datetime(2024, 1, 1, tzinfo=timezone.utc),
            )
        ]
    )
    now = [h.fact.object for h in kb.search("Who does Ada work for?", 5, "facts").facts]
    past = kb.search("Who does Ada work for?", 5, "facts", as_of=datetime(2021, 6, 1, tzinfo=timezone.utc))
    assert now == ["Globex"] and [h.fact.object for h in past.facts] == ["Acme"]
    kb.close()


def test_deleted_documents_stay_deleted_and_a_crash_between_store_and_index_loses_nothing(
    tmp_path, embedder, extractor
):
    kb = base(tmp_path, embedder, extractor)
    for doc_id, text in DOCS.items():
        kb.add_document(DocumentIn(id=doc_id, text=text))
    kb.extract_pending()
    kb.delete_document("curie")
    assert "curie" not in {h.document_id for h in kb.search("Marie Curie", 5, "passages").passages}
    assert not any(h.fact.subject == "Marie Curie" for h in kb.search("Marie Curie born", 10, "facts").facts)
    # Crashes between the store and the index: a document the store accepted whose passage
    # was never indexed, and one the store deleted whose passage and facts were not.
    kb.store.add_document(DocumentIn(id="late", text="Lyon is a city on the Rhone."))
    kb.store.delete_document("warsaw")
    kb.close()

    reopened = base(tmp_path, embedder, extractor)
    found = {h.document_id for h in reopened.search("Lyon Rhone Marie Curie Warsaw", 5, "passages").passages}
    assert "late" in found and "curie" not in found and "warsaw" not in found
    assert not any(h.fact.subject == "Warsaw" for h in reopened.search("Warsaw Vistula", 10, "facts").facts)
    assert not [r for r in reopened.memory.records if "warsaw" in r]
    assert reopened.store.find_entity("Marie Curie") == []
    reopened.close()


@pytest.mark.parametrize(
    ("args", "field"),
    [(("",), "query"), (("q", 0), "k"), (("q", 101), "k"), (("q", 5, "everything"), "mode")],
)
def test_bad_searches_are_refused_naming_the_field(tmp_path, embedder, args, field):
    kb = base(tmp_path, embedder, None)
    with pytest.raises(FactsInputError) as e:
        kb.search(*args)
    assert e.value.field == field
    with pytest.raises(FactsInputError, match="depth"):
        kb.search("q", 5, "graph", depth=9)
    kb.close()


class Unreadable:
    """An extractor that cannot read one document (as spaCy cannot hold a 2,000-character
    entity name in an EntityMention), and reads the others."""

    def __init__(self, real):
        self.real = real

    def extract(self, text):
        if "unreadable" in text:
            raise ValueError("this one breaks the extractor")
        return self.real.extract(text)

    def extract_many(self, texts):
        return [self.extract(t) for t in texts]


def test_one_document_the_extractor_cannot_read_fails_alone(tmp_path, embedder, extractor):
    kb = base(tmp_path, embedder, Unreadable(extractor))
    kb.add_documents(
        [DocumentIn(id="bad", text="An unreadable text."), DocumentIn(id="curie", text=DOCS["curie"])]
    )
    assert kb.extract_pending() == 2 and kb.extract_pending() == 0  # the failed one is not retried
    assert kb.store.extraction_progress() == {"pending": 0, "done": 1, "failed": 1, "none": 0}
    assert kb.search("Marie Curie born", 3, "facts").facts
    assert [h.document_id for h in kb.search("unreadable text", 1, "passages").passages] == ["bad"]
    kb.close()


class Poisoned:
    """A scripted extractor service that one document breaks: any call whose texts hold
    "poison" fails as the service does (transiently: the spaCy replica it killed, or a 5xx of
    the AI service), and with `down_after` the next calls fail too (the replica restarting);
    `down` calls fail first (an outage). It records every call."""

    def __init__(self, down_after=0, down=0):
        self.down_after, self.down, self.calls = down_after, down, []

    def extract_many(self, texts):
        self.calls.append(list(texts))
        if self.down:
            self.down -= 1
            raise ExtractorUnreachableError("the extractor did not answer")
        if any("poison" in t for t in texts):
            self.down = self.down_after
            raise ExtractorUnreachableError("the extractor died reading it")
        return [Extraction(extractor="scripted", entities=[{"name": t.split()[0]}]) for t in texts]

    def extract(self, text):
        return self.extract_many([text])[0]


def steps(kb, n):
    """`n` turns of the shard's extraction worker: a transient failure waits for the next."""
    for _ in range(n):
        try:
            kb.extract_pending()
        except ExtractorUnreachableError:
            pass


@pytest.mark.parametrize("down_after", [0, 1], ids=["5xx", "kills the replica"])
def test_a_poison_document_fails_after_its_attempts_and_the_rest_of_its_batch_is_read(
    tmp_path, embedder, down_after
):
    poisoned = Poisoned(down_after)
    kb = base(tmp_path, embedder, poisoned, extract_max_attempts=3)
    texts = {"alpha": "Alpha is read.", "poison": "A poison document.", "omega": "Omega is read."}
    kb.add_documents([DocumentIn(id=i, text=t) for i, t in texts.items()])
    steps(kb, 12)
    assert kb.store.extraction_progress() == {"pending": 0, "done": 2, "failed": 1, "none": 0}
    failed = kb.store.document("poison")
    assert failed.extraction == "failed" and "after 3 attempts" in failed.extraction_error
    assert "died reading it" in failed.extraction_error
    # Tried in its first batch, then alone three times: never again, so never billed again.
    assert sum("A poison document." in c for c in poisoned.calls) == 4
    assert kb.extract_pending() == 0
    kb.close()


def test_an_extractor_service_that_is_down_fails_no_document(tmp_path, embedder):
    service = Poisoned(down=10**6)
    kb = base(tmp_path, embedder, service, extract_max_attempts=2)
    kb.add_documents([DocumentIn(id=i, text=f"{i} is read.") for i in ("alpha", "beta")])
    steps(kb, 20)  # every call fails: nothing is the documents' fault
    assert kb.store.extraction_progress()["pending"] == 2 and len(service.calls) >= 20
    assert kb.store.document("alpha").extraction_error is None  # no attempt was counted
    service.down = 0  # the service is back
    steps(kb, 2)
    assert kb.store.extraction_progress() == {"pending": 0, "done": 2, "failed": 0, "none": 0}
    kb.close()


def test_a_text_longer_than_the_memory_indexes_is_refused_before_anything_is_stored(tmp_path, embedder):
    kb = base(tmp_path, embedder, None)
    with pytest.raises(FactsInputError) as e:
        kb.add_documents([DocumentIn(id="ok", text="fine"), DocumentIn(id="long", text="word " * 5000)])
    assert e.value.field == "documents.1.text" and kb.store.stats()["documents"] == 0
    kb.close()


def test_hop_rerank_lifts_the_document_about_an_entity_the_best_passage_names(tmp_path, embedder, extractor):
    kb = base(tmp_path, embedder, extractor, graph_rerank="hop")
    kb.add_documents(
        [
            DocumentIn(id="curie", title="Marie Curie", text="Marie Curie was born in Warsaw."),
            DocumentIn(id="warsaw", title="Warsaw (city)", text="The city lies on the Vistula river."),
            DocumentIn(id="berlin", title="Berlin", text="Berlin lies on the Spree river."),
        ]
    )
    kb.extract_pending()
    query = "Which river flows through the city where Marie Curie was born?"
    plain = {h.document_id: h for h in kb.search(query, 3, "hybrid").passages}
    hops = {h.document_id: h for h in kb.search(query, 3, "graph").passages}
    assert hops["curie"].distance == 0  # about the entity the query names
    assert hops["warsaw"].distance == 1 and hops["warsaw"].scores["graph"] > 0  # named by curie
    assert hops["berlin"].scores["graph"] == 0 and plain["warsaw"].scores.get("graph", 0) == 0
    assert hops["warsaw"].score > hops["berlin"].score
    kb.close()


def test_hop_rerank_lifts_a_best_passage_that_names_another_found_one(tmp_path, embedder, extractor):
    """A chain's first hop: a passage the query does not name, which names a found passage,
    gains CHAIN_SHARE of the hop weight times that passage's fused score."""
    kb = base(tmp_path, embedder, extractor, graph_rerank="hop")
    kb.add_documents(
        [
            DocumentIn(
                id="curie", title="Marie Curie", text="The discoverer of polonium was born in Warsaw."
            ),
            DocumentIn(id="warsaw", title="Warsaw", text="Warsaw lies on the Vistula river."),
            DocumentIn(id="berlin", title="Berlin", text="Berlin lies on the Spree river."),
            # The least similar passage scores 0 after min-max fusion: others, below Warsaw.
            DocumentIn(id="bananas", title="Bananas", text="Bananas are rich in potassium."),
            DocumentIn(id="chess", title="Chess", text="Chess is played on a board of 64 squares."),
        ]
    )
    kb.extract_pending()
    query = "Which river flows through the birthplace of the discoverer of polonium?"
    hops = {h.document_id: h for h in kb.search(query, 5, "graph").passages}
    assert hops["curie"].distance == 1
    assert hops["curie"].scores["graph"] == pytest.approx(0.6 * CHAIN_SHARE * hops["warsaw"].scores["fused"])
    assert hops["warsaw"].scores["graph"] > 0 and hops["berlin"].scores["graph"] == 0
    kb.close()


def test_hop_rerank_lifts_the_titles_the_query_writes_out_not_names_inside_them_or_in_lower_case(
    tmp_path, embedder
):
    """The query names a title as a passage does: a run that starts with a capital or a digit,
    the longest at each place. Entities named "Kiss", "hotel" and "Birthday Honours" exist, and
    the query says each word for word, but only inside a longer title or in lower case."""
    kb = base(tmp_path, embedder, None, graph_rerank="hop")
    titled = {
        "film": ("Kiss and Tell (1945 film)", "A comedy about a girl and her family."),
        "album": ("Kiss (album)", "The second record of a rock band."),
        "hotel": ("Hotel (1967 film)", "A drama set in a grand old hotel."),
        "honours": ("1925 Birthday Honours", "Appointments on the birthday of the king."),
        "every": ("Birthday Honours", "Appointments made each year by the sovereign."),
    }
    kb.add_documents([DocumentIn(id=i, title=title, text=text) for i, (title, text) in titled.items()])
    kb.add_facts(
        [
            FactIn(subject="Kiss", predicate="stayed_at", object="hotel"),
            FactIn(subject="Birthday Honours", predicate="made_by", object="George V"),
        ]
    )
    query = "Which hotel hosted the cast of Kiss and Tell after the 1925 Birthday Honours?"
    found = kb.search(query, 5, "graph")
    named = set(kb.store.entity_names(found.seeds))
    assert {"Kiss", "hotel", "Birthday Honours"} <= named  # what lifted those titles before
    hits = {h.document_id: h for h in found.passages}
    assert {d for d, h in hits.items() if h.scores["graph"] > 0} == {"film", "honours"}
    assert hits["film"].distance == hits["honours"].distance == 0
    assert hits["film"].scores["graph"] == pytest.approx(0.6)
    kb.close()


def test_filters_select_passages_and_facts_by_their_documents(tmp_path, embedder, extractor):
    kb = base(tmp_path, embedder, extractor)
    kb.add_documents(
        [
            DocumentIn(id="curie", text=DOCS["curie"], source="wiki", metadata={"year": 1867}),
            DocumentIn(id="warsaw", text=DOCS["warsaw"], source="atlas", metadata={"year": 2020}),
        ]
    )
    kb.extract_pending()
    found = kb.search("Warsaw", 5, "hybrid", filters={"source": "atlas"})
    assert [h.document_id for h in found.passages] == ["warsaw"]
    assert found.facts and all(h.fact.provenance[0]["document_id"] == "warsaw" for h in found.facts)
    old = kb.search("Warsaw", 5, "passages", filters={"year": {"$lt": 1900}})
    assert [h.document_id for h in old.passages] == ["curie"]
    with pytest.raises(FactsInputError) as e:
        kb.search("Warsaw", 5, filters={"year": {"$near": 3}})
    assert e.value.field == "filters.year"
    kb.close()


def test_a_batch_stored_unindexed_is_searchable_after_index_pending_and_survives_a_reopen(tmp_path, embedder):
    kb = base(tmp_path, embedder, None)
    kb.add_documents([DocumentIn(id=d, text=t) for d, t in DOCS.items()], job="j", index=False)
    assert kb.search("Berlin Spree", 3, "passages").passages == []
    assert kb.index_pending(2) == 2
    kb.close()
    reopened = base(tmp_path, embedder, None)  # the one left waiting is not indexed on open...
    assert reopened.job_progress("j")["indexed"] == 2
    assert reopened.index_pending() == 1 and reopened.index_pending() == 0  # ...but by the worker
    assert {h.document_id for h in reopened.search("Berlin Spree", 3, "passages").passages} >= {"berlin"}
    reopened.close()


def test_a_merge_that_makes_two_facts_one_drops_the_duplicate_from_the_index(tmp_path, embedder):
    kb = base(tmp_path, embedder, None)
    kb.add_facts([FactIn(subject="Jo Lee", predicate="works_for", object="Acme")])
    kb.add_facts([FactIn(subject="Joanna Lee", predicate="works_for", object="Acme")])
    (jo,), (joanna,) = kb.store.find_entity("Jo Lee"), kb.store.find_entity("Joanna Lee")
    kb.merge_entities(joanna.id, jo.id)
    hits = kb.search("Who works for Acme?", 5, "facts").facts  # a dangling index entry would raise
    assert len(hits) == 1 and len([r for r in kb.memory.records if r.startswith("fact:")]) == 1
    kb.close()


def test_reopening_moves_fact_sentences_an_earlier_version_indexed_beside_the_passages(tmp_path, embedder):
    from models._private.memory.schema import Record

    kb = base(tmp_path, embedder, None)
    (fact_id,) = kb.add_facts([FactIn(subject="Ada", predicate="works_for", object="Acme")])
    kb.memory.upsert([Record(id=f"fact:{fact_id}", namespace=kb.namespace, text="Ada works for Acme")])
    kb.close()
    reopened = base(tmp_path, embedder, None)
    assert reopened.memory.records[f"fact:{fact_id}"].namespace == reopened.namespace + "/facts"
    assert [h.fact.id for h in reopened.search("Ada Acme", 5, "facts").facts] == [fact_id]
    reopened.close()


def test_pagerank_rerank_lifts_the_document_beside_the_querys_entity(tmp_path, embedder, extractor):
    kb = base(tmp_path, embedder, extractor, graph_rerank="pagerank")
    kb.add_documents(
        [
            DocumentIn(id="curie", title="Marie Curie", text="Marie Curie was born in Warsaw."),
            DocumentIn(id="warsaw", title="Warsaw (city)", text="Warsaw lies on the Vistula river."),
            DocumentIn(id="berlin", title="Berlin", text="Berlin lies on the Spree river."),
        ]
    )
    kb.extract_pending()
    query = "Which river flows through the city where Marie Curie was born?"
    hits = {h.document_id: h for h in kb.search(query, 3, "graph").passages}
    # Every passage of three is a start; Warsaw's also gets the walk from Marie Curie's.
    assert hits["warsaw"].scores["graph"] > hits["berlin"].scores["graph"]
    assert hits["warsaw"].score > hits["berlin"].score
    kb.add_document(DocumentIn(id="spree", title="Spree", text="The Spree flows through Berlin."))
    kb.extract_pending()  # the graph is built anew after a write
    assert kb._graph is None and "spree" in {
        h.document_id for h in kb.search("Spree Berlin", 3, "graph").passages
    }
    kb.close()


def test_a_passage_names_a_title_when_it_writes_it_out_capitalised():
    from models._private.facts.search import _titled

    about = {"new york city": ["nyc"], "it": ["it-film"], "york": ["york"]}
    text = "He moved to New York City in 1990. It rained; it was cold in york."
    assert _titled(text, about) == ["new york city", "it"]  # the longest run; lower case is no name
    # A run may start with a digit: a year or an ordinal begins many titles.
    about = {"1925 birthday honours": ["1925"], "birthday honours": ["all"]}
    assert _titled("Who made the 1925 Birthday Honours?", about) == ["1925 birthday honours"]


class CountingEmbedder:
    """The real embedder, counting the texts it encodes."""

    def __init__(self, embedder):
        self.embedder, self.encoded = embedder, []

    def __getattr__(self, name):
        return getattr(self.embedder, name)

    def encode(self, texts):
        self.encoded += texts
        return self.embedder.encode(texts)


def test_a_query_asked_in_every_mode_is_encoded_once_and_ranks_as_if_encoded_anew(
    tmp_path, embedder, extractor, monkeypatch
):
    counting = CountingEmbedder(embedder)
    kb = base(tmp_path / "cached", counting, extractor)
    fresh = base(tmp_path / "fresh", embedder, extractor)
    for each in (kb, fresh):
        each.add_documents([DocumentIn(id=d, title=d.title(), text=t) for d, t in DOCS.items()])
        each.extract_pending()
    query = "What is the birthplace of Marie Curie known for?"
    counting.encoded.clear()
    for mode in ("passages", "facts", "hybrid", "graph"):
        cached = kb.search(query, 3, mode)
        fresh._query_vectors.clear()  # the other namespace encodes it every time
        anew = fresh.search(query, 3, mode)
        assert [(h.document_id, h.score) for h in cached.passages] == [
            (h.document_id, h.score) for h in anew.passages
        ]
        assert [(h.fact.predicate, h.score) for h in cached.facts] == [
            (h.fact.predicate, h.score) for h in anew.facts
        ]
    assert counting.encoded == [query]
    # It keeps the last QUERY_VECTORS queries' vectors only: the least recently asked goes.
    monkeypatch.setattr(search, "QUERY_VECTORS", 2)
    for q in ("Warsaw", "Berlin", query, "Spree"):
        kb.search(q, 1, "passages")
    assert list(kb._query_vectors) == [query, "Spree"]
    kb.close()
    fresh.close()


MORE = {
    **DOCS,
    "lovelace": "Ada Lovelace worked with Charles Babbage in London.",
    "babbage": "Charles Babbage designed the Analytical Engine in England.",
}


def test_reading_ahead_extracts_the_same_batches_and_never_a_stale_text(tmp_path, embedder, extractor):
    ahead, plain = (
        base(tmp_path / "ahead", embedder, extractor),
        base(tmp_path / "plain", embedder, extractor),
    )
    for kb in (ahead, plain):
        kb.add_documents([DocumentIn(id=d, text=t) for d, t in MORE.items()])
    assert [ahead.extract_pending(2, read_ahead=True) for _ in range(4)] == [2, 2, 1, 0]
    assert [plain.extract_pending(2) for _ in range(4)] == [2, 2, 1, 0]

    def triples(kb):
        return sorted(
            (f.subject, f.predicate, f.object) for f in kb.store.facts_page(include_history=True)[0]
        )

    assert triples(ahead) == triples(plain) and triples(ahead)
    assert ahead.store.stats() == plain.store.stats()

    # A document deleted and posted again while it was read ahead: the old text's reading is
    # dropped, and the new text is read in its turn.
    kb = base(tmp_path / "stale", embedder, extractor)
    kb.add_documents([DocumentIn(id="curie", text=DOCS["curie"]), DocumentIn(id="next", text=DOCS["berlin"])])
    assert kb.extract_pending(1, read_ahead=True) == 1  # curie; "next" is being read
    kb.delete_document("next")
    kb.add_document(DocumentIn(id="next", text=MORE["babbage"]))
    while kb.extract_pending(1, read_ahead=True):
        pass
    assert kb.store.document("next").extraction == "done"
    said = {(f.subject, f.object) for f in kb.store.facts_page(include_history=True)[0]}
    assert ("Charles Babbage", "Analytical Engine") in said and not any("Berlin" in (s, o) for s, o in said)
    for each in (ahead, plain, kb):
        each.close()


def test_passages_read_past_the_best_k_when_as_of_drops_them(tmp_path, embedder):
    kb = base(tmp_path, embedder, None)
    new = [f"Warsaw news {i}: Warsaw held a Warsaw city fair." for i in range(4)]
    kb.add_documents(
        [
            DocumentIn(id=f"new{i}", text=t, reference_time=datetime(2020, 1, 1, tzinfo=timezone.utc))
            for i, t in enumerate(new)
        ]
        + [
            DocumentIn(
                id="old",
                text="A town on the Vistula.",
                reference_time=datetime(1900, 1, 1, tzinfo=timezone.utc),
            )
        ]
    )
    everything = kb.search("Warsaw city fair", 5, "passages").passages
    assert everything[-1].document_id == "old"  # the least similar: after four rows read first
    found = kb.search("Warsaw city fair", 1, "passages", as_of=datetime(1950, 1, 1, tzinfo=timezone.utc))
    assert [h.document_id for h in found.passages] == ["old"]
    assert [h.document_id for h in kb.search("Warsaw city fair", 2, "passages").passages] == [
        h.document_id for h in everything[:2]
    ]
    kb.close()


def test_facts_read_past_the_best_k_when_time_or_a_filter_drops_them(tmp_path, embedder):
    kb = base(tmp_path, embedder, None)
    y = lambda year: datetime(year, 1, 1, tzinfo=timezone.utc)  # noqa: E731
    # Ada's employers, each ending the last (works_for is functional); the best matches ended.
    for year, company in [(2001, "Acme Works"), (2002, "Acme Labs"), (2003, "Acme Steel"), (2004, "Globex")]:
        kb.add_facts([FactIn(subject="Ada", predicate="works_for", object=company, valid_at=y(year))])
    query = "Ada works for Acme"
    history = kb.search(query, 5, "facts", as_of=y(2001)).facts
    assert [h.fact.object for h in history] == ["Acme Works"]
    now = kb.search(query, 1, "facts").facts
    assert [h.fact.object for h in now] == ["Globex"]  # ranked after the three that ended
    kb.add_documents(
        [
            DocumentIn(id="a", text="Ada joined Acme.", source="hr"),
            DocumentIn(id="b", text="Ada joined Acme too.", source="press"),
        ]
    )
    kb.store.add_extraction(
        "a", Extraction(extractor="t", facts=[FactIn(subject="Ada", predicate="joined", object="Acme")])
    )
    kb.store.add_extraction(
        "b", Extraction(extractor="t", facts=[FactIn(subject="Ada", predicate="joins", object="Acme")])
    )
    kb._index_facts(kb.store.fact_ids())
    (hit,) = kb.search("Ada joined Acme", 1, "facts", filters={"source": "press"}).facts
    assert hit.fact.predicate == "joins" and hit.fact.provenance[0]["document_id"] == "b"
    kb.close()


class Pause:
    """Wraps a real call: its first call sets `entered` and waits for `go` before it runs (a
    window in the middle of a write, to look at the namespace from another thread)."""

    def __init__(self, call):
        self.call, self.entered, self.go = call, threading.Event(), threading.Event()

    def __call__(self, *args, **kwargs):
        if not self.entered.is_set():
            self.entered.set()
            assert self.go.wait(60)
        return self.call(*args, **kwargs)


@pytest.mark.parametrize("window", ["embedding the fact sentences", "writing them to the index"])
def test_a_job_reads_done_only_once_its_facts_are_searchable(tmp_path, embedder, extractor, window):
    kb = base(tmp_path, CountingEmbedder(embedder), extractor)
    kb.add_documents([DocumentIn(id="curie", text=DOCS["curie"])], job="j")
    if window == "embedding the fact sentences":  # the extraction's one encode
        kb.memory.embedder.encode = pause = Pause(kb.memory.embedder.encode)
    else:
        kb.memory.upsert = pause = Pause(kb.memory.upsert)
    worker = threading.Thread(target=kb.extract_pending, kwargs={"read_ahead": True})
    worker.start()
    assert pause.entered.wait(60)
    during = kb.job_progress("j")  # the facts are read, not yet in the index
    pause.go.set()
    worker.join()
    assert (during["pending"], during["done"]) == (1, 0)
    assert kb.job_progress("j")["done"] == 1
    (top, *_) = kb.search("Where was Marie Curie born?", 3, "facts").facts
    assert (top.fact.subject, top.fact.predicate, top.fact.object) == ("Marie Curie", "born_in", "Warsaw")
    kb.close()


def test_the_base_encodes_queries_on_a_thread_of_their_own_unless_its_memory_says_otherwise(tmp_path):
    # A facts base searches beside its indexer's batches: one torch thread for a query there
    # (EmbedderConfig.query_threads); a memory config that sets it is kept as given.
    from models._private.memory.schema import MemoryConfig
    from models._private.retrieval.embedder import EmbedderConfig

    assert FactsBase(str(tmp_path / "a")).memory.embedder.config.query_threads == 1
    memory = MemoryConfig(embedder=EmbedderConfig(query_threads=None))
    assert FactsBase(str(tmp_path / "b"), memory=memory).memory.embedder.config.query_threads is None


def test_a_store_has_one_writer_and_the_next_opens_it_once_the_first_lets_go(tmp_path):
    """Serve stops a replica gracefully while its successor starts: two processes must never
    write one namespace (both would append to the memory's log and extract the same documents)."""
    from models._private.core.errors import FactsStoreBusyError

    first = FactsBase(str(tmp_path), config=FactsConfig())
    first.add_facts([FactIn(subject="Ada", predicate="born_in", object="London")])
    with pytest.raises(FactsStoreBusyError, match="held by another process"):
        FactsBase(str(tmp_path), config=FactsConfig(), writer_wait_s=0.3)
    first.close()
    second = FactsBase(str(tmp_path), config=FactsConfig(), writer_wait_s=0.3)
    assert second.store.find_entity("Ada", None)
    second.close()
