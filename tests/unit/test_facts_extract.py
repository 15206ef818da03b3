"""The offline extractor with the real spaCy English pipeline, alone and into the facts store."""

from datetime import datetime, timezone

import pytest

from models._private.facts.schema import DocumentIn, FactsConfig
from models._private.facts.spacy_extractor import SpacyExtractor
from models._private.facts.store.core import FactStore

PARAGRAPH = (
    "Marie Curie worked for the University of Paris. She was born in Warsaw, the capital of Poland. "
    "Pierre Curie, a physicist, married Marie Curie in 1895. Acme Corp is based in Berlin."
)


@pytest.fixture(scope="module")
def extractor():
    return SpacyExtractor()


def triples(extraction):
    return {(f.subject, f.predicate, f.object) for f in extraction.facts}


def test_a_known_paragraph_gives_its_entities_and_facts(extractor):
    ex = extractor.extract(PARAGRAPH)
    assert {(e.name, e.type) for e in ex.entities} == {
        ("Marie Curie", "PERSON"),
        ("University of Paris", "ORG"),
        ("Warsaw", "GPE"),
        ("Poland", "GPE"),
        ("Pierre Curie", "PERSON"),
        ("Acme Corp", "ORG"),
        ("Berlin", "GPE"),
    }
    assert {
        ("Marie Curie", "work_for", "University of Paris"),  # subject-verb-object
        ("Marie Curie", "born_in", "Warsaw"),  # through the pronoun
        ("Warsaw", "capital_of", "Poland"),  # apposition
        ("Pierre Curie", "is_a", "physicist"),  # apposition to a plain noun: a literal
        ("Pierre Curie", "marry", "Marie Curie"),
        ("Acme Corp", "based_in", "Berlin"),  # passive
    } <= triples(ex)
    by_triple = {(f.subject, f.predicate, f.object): f for f in ex.facts}
    assert by_triple[("Marie Curie", "born_in", "Warsaw")].confidence < 1  # read through "She"
    assert by_triple[("Pierre Curie", "marry", "Marie Curie")].valid_at == datetime(
        1895, 1, 1, tzinfo=timezone.utc
    )
    assert by_triple[("Pierre Curie", "is_a", "physicist")].object_type is None
    # Every fact points at the sentence that says it; only a pronoun hides its subject there.
    for f in ex.facts:
        (span,) = f.spans
        sentence = PARAGRAPH[span.start : span.end]
        assert f.subject in sentence or (f.confidence == 0.6 and "She" in sentence)
        assert f.object in sentence


def test_entities_one_sentence_names_without_a_pattern_are_linked_weakly(extractor):
    ex = extractor.extract("Alice Smith and Bob Jones met Carol White at Google.")
    weak = [f for f in ex.facts if f.predicate == "mentioned_with"]
    assert weak and all(f.confidence == 0.3 for f in weak)
    named = {e.name for e in ex.entities}
    assert all({f.subject, f.object} <= named for f in weak)
    # A pair a pattern linked is not linked weakly as well.
    strong = {frozenset({f.subject, f.object}) for f in ex.facts if f.confidence == 1}
    assert not strong & {frozenset({f.subject, f.object}) for f in weak}


def test_a_name_with_no_letters_is_no_entity(extractor):
    ex = extractor.extract("The prize went to \u2606 and to Marie Curie.")
    assert all(e.name.strip("\u2606 ") for e in ex.entities)


def test_extracted_documents_resolve_into_one_graph(tmp_path, extractor):
    store = FactStore(str(tmp_path / "f.sqlite"), FactsConfig(functional_predicates=["work_for"]))
    texts = [PARAGRAPH, "In Paris, Marie Curie worked for the Sorbonne in 1906."]
    written = datetime(1900, 1, 1, tzinfo=timezone.utc)  # what d0 says held from 1900
    for i, (text, ex) in enumerate(zip(texts, extractor.extract_many(texts), strict=True)):
        store.add_document(DocumentIn(id=f"d{i}", text=text, reference_time=written), ex)
    (marie,) = store.find_entity("Marie Curie", "PERSON")
    assert marie.documents == ["d0", "d1"]
    (job,) = store.facts(subject_id=marie.id, predicate="work_for")
    assert job.object == "Sorbonne"  # 1906 ended the job of 1900
    (before,) = store.facts(
        subject_id=marie.id, predicate="work_for", as_of=datetime(1903, 1, 1, tzinfo=timezone.utc)
    )
    assert before.object == "University of Paris"
    store.close()


def test_mentions_read_the_same_entities_as_extraction_without_the_parse(extractor):
    for text in (
        "Which river flows through the city where Marie Curie was born?",
        "Did Pierre Curie work for the University of Paris before 1906?",
    ):
        assert extractor.mentions(text) == extractor.extract(text).entities


# A user's note: a person, another named in a clause about her, then "She".
ADA = "Ada Lovelace is a mathematician who worked with Charles Babbage. She was born in London."


def test_she_stands_for_the_person_the_last_sentence_is_about_not_one_named_in_its_clause(extractor):
    ex = extractor.extract(ADA)
    born = [f for f in ex.facts if f.predicate == "born_in"]
    assert [(f.subject, f.object, f.confidence) for f in born] == [("Ada Lovelace", "London", 0.6)]


def test_a_pronoun_either_of_two_people_could_stand_for_credits_neither(extractor):
    # No gender is known of a name: "She" could be either, so no fact rather than a wrong one.
    ex = extractor.extract("Ada Lovelace wrote to Charles Babbage. She was born in London.")
    assert [f for f in ex.facts if f.predicate == "born_in"] == []
    assert ("Ada Lovelace", "write_to", "Charles Babbage") in triples(ex)


def test_a_fact_reads_as_a_whole_phrase_never_cut_after_a_preposition(extractor):
    from cluster._private.demo import DEMO_DOCUMENTS

    ex = extractor.extract(ADA)
    (what,) = [f for f in ex.facts if f.predicate == "is_a"]
    assert what.text() == "Ada Lovelace is a mathematician who worked with Charles Babbage"
    assert ("Ada Lovelace", "work_with", "Charles Babbage") in triples(ex)  # the clause, as an edge
    dangling = {"a", "an", "the", "of", "with", "in", "on", "at", "by", "for", "to", "from", "and", "who"}
    texts = [ADA, PARAGRAPH, *(d["text"] for d in DEMO_DOCUMENTS)]
    for ex in extractor.extract_many(texts):
        for f in ex.facts:
            assert f.text().split()[-1].lower() not in dangling, f.text()
            assert "  " not in f.text() and f.object.strip() == f.object


def test_a_fact_whose_text_names_no_time_has_no_start_and_shows_when_it_was_learnt(tmp_path, extractor):
    from cluster._private.format import format_search

    learnt = datetime(2026, 12, 6, 19, 0, tzinfo=timezone.utc)
    store = FactStore(str(tmp_path / "f.sqlite"), clock=lambda: learnt.timestamp())
    for document_id, text in (
        ("ada.txt", "Ada Lovelace was born in London."),
        ("curie.txt", "Marie Curie married Pierre Curie in 1895."),
    ):
        store.add_document(DocumentIn(id=document_id, text=text), extractor.extract(text))
    by_triple = {(f.subject, f.predicate, f.object): f for f in store.facts()}
    born = by_triple[("Ada Lovelace", "born_in", "London")]
    assert born.valid_at is None and born.created_at == learnt
    assert [p["document_id"] for p in born.provenance] == ["ada.txt"]
    married = by_triple[("Marie Curie", "marry", "Pierre Curie")]
    assert married.valid_at == datetime(1895, 1, 1, tzinfo=timezone.utc)
    # `as_of` reads still count a fact of no stated start from when it was learnt.
    before = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert born.id not in {f.id for f in store.facts(as_of=before)}
    assert married.id in {f.id for f in store.facts(as_of=before)}
    found = {
        "facts": [{"score": 1.0, "fact": f.model_dump(mode="json")} for f in (born, married)],
        "passages": [],
    }
    born_row, married_row = format_search(found).splitlines()[1:3]
    assert "learnt 2026-12-06" in born_row and ".." not in born_row
    assert "1895-01-01 .. now" in married_row
    store.close()
