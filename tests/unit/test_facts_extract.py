"""The offline extractor with the real spaCy English pipeline, alone and into the facts store."""

from datetime import datetime, timezone

import pytest

from models._private.facts_extract import SpacyExtractor
from models._private.facts_schema import DocumentIn, FactsConfig
from models._private.facts_store import FactStore

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
