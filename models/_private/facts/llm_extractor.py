"""The model-backed extractor: a prompt to an OpenAI-compatible chat service (this project's AI
service, vLLM, OpenAI) for entities and facts as JSON, validated by a pydantic schema, for
deployments with a real model.

The model answers one JSON object (`SYSTEM_PROMPT` says which). The reply may wrap it in a
```json fence or prose: the first JSON object in it is read. The schema is lenient where
models are sloppy (a missing type, a number for a name, "Works For" for a predicate, an
unreadable date) and strict where it matters (names and predicates are not blank). An answer
that is no JSON or fails the schema is sent back with the problem, as a follow-up message, up
to `retries` times; then `ExtractionError` says what was wrong.

What the store receives:
- entities: each listed entity and each entity a fact names (the store resolves names), with
  the spans of its first few case-insensitive, whole-word occurrences in the text;
- facts: at confidence 0.8, with one span from the subject to the object when both occur in
  one sentence of the text, else none (a fact read through a pronoun);
- a name longer than the store takes (500 characters; 2,000 for a literal object) is no name:
  the entity or fact is dropped, not cut; a sentence longer than 5,000 characters is cut.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Annotated, Any

import httpx
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationError,
    field_validator,
    model_validator,
)

from models._private.core.errors import ConfigError, ExtractionError
from models._private.facts.resolution import normalise
from models._private.facts.schema import EntityMention, Extraction, FactIn, Span

__all__ = ["SYSTEM_PROMPT", "LLMExtractor"]

SYSTEM_PROMPT = """\
You read a text and return the named entities it mentions and the facts it states, as one JSON \
object and nothing else:
{"entities": [{"name": str, "type": str}],
 "facts": [{"subject": str, "subject_type": str, "predicate": str, "object": str,
            "object_type": str or null, "valid_at": str or null, "sentence": str}]}
- name, subject, object: the name as the text writes it, without a leading "the".
- type, subject_type, object_type: PERSON, ORG, GPE (country, city, state), LOC, NORP \
(nationality, religious or political group), FAC, PRODUCT, EVENT, WORK_OF_ART, LAW or LANGUAGE.
- predicate: a short snake_case verb phrase, such as works_for, born_in, capital_of, founded, \
married.
- object_type: null when the object is a value (a date, a number, a profession), not an entity.
- valid_at: the ISO 8601 date the fact began to hold if the text says when, else null.
- sentence: the fact as one short sentence.
Only what the text states: no outside knowledge, no guesses. No facts: "facts": []."""

CONFIDENCE = 0.8  # of every fact read: below an explicit post (1.0), above spaCy's pronouns (0.6)
MAX_SPANS = 5  # occurrences of an entity's name recorded as its spans
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_WORD = re.compile(r"[\W_]+")
_LITERAL_TYPES = frozenset({"", "null", "none", "literal", "value"})


def _max_length(model: type[BaseModel], field: str) -> int:
    return next(m.max_length for m in model.model_fields[field].metadata if hasattr(m, "max_length"))


_MAX_NAME = min(_max_length(EntityMention, "name"), _max_length(FactIn, "subject"))
_MAX_OBJECT = _max_length(FactIn, "object")
_MAX_PREDICATE = _max_length(FactIn, "predicate")
_MAX_TYPE = min(_max_length(EntityMention, "type"), _max_length(FactIn, "subject_type"))
_MAX_SENTENCE = _max_length(FactIn, "sentence")


class LLMExtractor:
    """Reads an `Extraction` from text by asking an OpenAI-compatible chat service.

    Args:
        base_url: The API root, e.g. "http://127.0.0.1:8000/v1" (chat/completions is under it).
        model: The model name the service serves.
        api_key: Sent as a bearer token, if given.
        timeout_s: Longest wait for one answer.
        max_tokens: Longest answer; a longer one is cut and fails the schema.
        max_concurrency: Requests `extract_many` keeps in flight at once.
        retries: Follow-ups that return an unusable answer to the model with its problem.
    """

    name = "llm"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_tokens: int = 1024,
        max_concurrency: int = 4,
        retries: int = 1,
    ):
        problems = [
            (field, f"must be {bound}, got {value}")
            for field, value, bound, ok in (
                ("timeout_s", timeout_s, "> 0", timeout_s > 0),
                ("max_tokens", max_tokens, ">= 1", max_tokens >= 1),
                ("max_concurrency", max_concurrency, ">= 1", max_concurrency >= 1),
                ("retries", retries, ">= 0", retries >= 0),
            )
            if not ok
        ]
        if problems:
            raise ConfigError("LLMExtractor", problems)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_tokens = max_tokens
        self.max_concurrency = max_concurrency
        self.retries = retries
        # One pooled client for every thread of `extract_many` (httpx.Client is thread-safe).
        self._client = httpx.Client(
            base_url=self.base_url + "/",
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_concurrency),
        )

    def close(self) -> None:
        """Closes the HTTP connections."""
        self._client.close()

    def extract(self, text: str) -> Extraction:
        """Entities with their spans, and facts with the span that says them.

        Raises:
            ExtractionError: the service answered an error status or could not be reached, or
                every answer (1 + `retries`) was unusable; the message says why.
        """
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}]
        problem = ""
        for _ in range(1 + self.retries):
            content, finish = self._complete(messages)
            try:
                return _extraction(_parse(content), text)
            except ValueError as e:
                problem = str(e)
                if finish == "length":
                    problem += f" (the answer was cut at max_tokens={self.max_tokens})"
            messages += [
                {"role": "assistant", "content": content},
                {
                    "role": "user",
                    "content": f"That answer cannot be used: {problem}\n"
                    "Answer again with only the JSON object the system message describes.",
                },
            ]
        attempts = 1 + self.retries
        raise ExtractionError(self.model, f"no usable answer in {attempts} attempt(s); last: {problem}")

    def extract_many(self, texts: list[str]) -> list[Extraction]:
        """`extract` for several texts, up to `max_concurrency` at once, in the order given.

        Raises:
            ExtractionError: the first text (in order) that could not be read; texts not yet
                sent are not sent.
        """
        if len(texts) <= 1 or self.max_concurrency == 1:
            return [self.extract(t) for t in texts]
        workers = min(self.max_concurrency, len(texts))
        with ThreadPoolExecutor(workers, thread_name_prefix="llm-extract") as pool:
            futures = [pool.submit(self.extract, t) for t in texts]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def _complete(self, messages: list[dict[str, str]]) -> tuple[str, str | None]:
        """The answer's content and finish reason."""
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": self.max_tokens,
            "response_format": {"type": "json_object"},
        }
        try:
            response = self._client.post("chat/completions", json=body)
        except httpx.HTTPError as e:
            reason = f"cannot reach the AI service at {self.base_url}: {e!r}"
            raise ExtractionError(self.model, reason, transient=True) from e
        status = response.status_code
        if status >= 400:
            raise ExtractionError(
                self.model,
                f"the AI service answered {status}: {_error_message(response)}",
                status,
                transient=status in (408, 429) or status >= 500,
            )
        try:
            choice = response.json()["choices"][0]
            return choice["message"].get("content") or "", choice.get("finish_reason")
        except (ValueError, LookupError, TypeError, AttributeError) as e:
            raise ExtractionError(
                self.model, f"the AI service's reply is no chat completion: {response.text[:200]!r}"
            ) from e


def _error_message(response: httpx.Response) -> str:
    """The message of an OpenAI-shaped error body ({"error": {"message"}}), or of the shapes
    other servers use ({"message"}, {"detail"}), else the body's start."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for found in (error, body.get("message"), body.get("detail")):
            if found:
                return str(found)
    return response.text[:200]


# -- what the model answers ------------------------------------------------------------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, str_strip_whitespace=True)


def _not_blank(v: str) -> str:
    if not v:
        raise ValueError("is blank")
    return v


def _label(v: str | None) -> str | None:
    """'work of art' -> 'WORK_OF_ART'; None and blanks are None."""
    if v is None:
        return None
    return _NOT_WORD.sub("_", v).strip("_").upper()[:_MAX_TYPE] or None


_Name = Annotated[str, AfterValidator(_not_blank)]
_Label = Annotated[str | None, AfterValidator(_label)]


class _Entity(_Lenient):
    name: _Name
    type: _Label = None

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v


class _Fact(_Lenient):
    subject: _Name
    subject_type: _Label = None
    predicate: str
    object: _Name
    object_type: str | None = None
    valid_at: datetime | None = None
    sentence: str | None = None

    @field_validator("object_type")
    @classmethod
    def _literal(cls, v: str | None) -> str | None:
        return None if v is None or v.casefold() in _LITERAL_TYPES else _label(v)

    @field_validator("predicate")
    @classmethod
    def _snake_case(cls, v: str) -> str:
        """'Works For', 'worksFor', 'works-for' -> 'works_for'."""
        v = _NOT_WORD.sub("_", _CAMEL.sub("_", v)).strip("_").lower()
        if not v:
            raise ValueError("has no letters or digits")
        return v

    @field_validator("valid_at", mode="before")
    @classmethod
    def _date(cls, v: Any) -> datetime | None:
        return _when(v)

    @field_validator("sentence")
    @classmethod
    def _sentence(cls, v: str | None) -> str | None:
        return v[:_MAX_SENTENCE] if v and v.strip() else None


class _Answer(_Lenient):
    entities: list[_Entity] = []
    facts: list[_Fact] = []

    @field_validator("entities", "facts", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v


def _when(v: Any) -> datetime | None:
    """An aware UTC datetime of an ISO 8601 date or time, or a year; None when unreadable (one
    bad date does not cost a document its facts)."""
    if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 9999:
        v = str(v)
    if not isinstance(v, str):
        return None
    v = v.strip()
    if re.fullmatch(r"\d{4}(-\d{2})?", v):  # a year, or a year and month
        v = f"{v}-01-01" if len(v) == 4 else f"{v}-01"
    try:
        when = datetime.fromisoformat(v[:-1] + "+00:00" if v.endswith(("Z", "z")) else v)
    except ValueError:
        return None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def _parse(content: str) -> _Answer:
    """The answer's JSON object, validated: the first outermost object in `content` with
    "entities" or "facts", else its first outermost object (prose around it may hold braces).

    Raises:
        ValueError: no JSON object, or one the schema refuses (the message lists the fields).
    """
    decoder = json.JSONDecoder()
    objects, end = [], 0
    for start in (m.start() for m in re.finditer(r"\{", content)):
        if start < end:  # inside an object read already
            continue
        try:
            found, end = decoder.raw_decode(content, start)
        except ValueError:
            continue
        objects.append(found)
    found = next((o for o in objects if "entities" in o or "facts" in o), objects[0] if objects else None)
    if found is None:
        raise ValueError(f"it holds no JSON object: {content[:200]!r}")
    try:
        return _Answer.model_validate(found)
    except ValidationError as e:
        where = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()
        )
        raise ValueError(f"the JSON does not fit the schema: {where}") from None


# -- what the store receives -----------------------------------------------------------------


def _extraction(answer: _Answer, text: str) -> Extraction:
    # Casefolded name -> the first type the model gave it, in the entities or in a fact: an
    # entity listed without a type takes the one a fact gives it, and the reverse.
    types: dict[str, str] = {}
    named = [(e.name, e.type) for e in answer.entities]
    named += [
        (n, t) for f in answer.facts for n, t in ((f.subject, f.subject_type), (f.object, f.object_type))
    ]
    for name, type_ in named:
        if type_:
            types.setdefault(name.casefold(), type_)
    mentions: dict[tuple[str, str], EntityMention] = {}

    def mention(name: str, type_: str) -> None:
        key = (name.casefold(), type_)
        if key not in mentions:
            mentions[key] = EntityMention(name=name, type=type_, spans=_spans(name, text))

    for e in answer.entities:
        if _takes(e.name):
            mention(e.name, e.type or types.get(e.name.casefold(), "thing"))
    sentences = _sentences(text)
    facts = []
    for f in answer.facts:
        subject_type = f.subject_type or types.get(f.subject.casefold(), "thing")
        # A listed entity is an entity even where the model gave the fact's object no type.
        object_type = f.object_type or types.get(f.object.casefold())
        if (
            len(f.predicate) > _MAX_PREDICATE
            or not _takes(f.subject)
            or (not _takes(f.object) if object_type is not None else len(f.object) > _MAX_OBJECT)
        ):
            continue
        mention(f.subject, subject_type)
        if object_type is not None:
            mention(f.object, object_type)
        facts.append(
            FactIn(
                subject=f.subject,
                subject_type=subject_type,
                predicate=f.predicate,
                object=f.object,
                object_type=object_type,
                sentence=f.sentence,
                valid_at=f.valid_at,
                confidence=CONFIDENCE,
                spans=_fact_span(f.subject, f.object, text, sentences),
            )
        )
    return Extraction(extractor=LLMExtractor.name, entities=list(mentions.values()), facts=facts)


def _takes(name: str) -> bool:
    """Whether the store takes `name` as an entity's: not too long, some letters or digits."""
    return len(name) <= _MAX_NAME and bool(normalise(name))


def _occurrences(name: str, text: str, start: int = 0, end: int | None = None) -> list[Span]:
    """Case-insensitive whole-word occurrences of `name` in text[start:end]."""
    pattern = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)", re.IGNORECASE)
    found = pattern.finditer(text, start, len(text) if end is None else end)
    return [Span(start=m.start(), end=m.end()) for m in found]


def _spans(name: str, text: str) -> list[Span]:
    return _occurrences(name, text)[:MAX_SPANS]


def _sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence-ish window: split after . ! ? and at blank lines."""
    bounds, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        bounds.append((start, m.start()))
        start = m.end()
    bounds.append((start, len(text)))
    return bounds


def _fact_span(subject: str, obj: str, text: str, sentences: list[tuple[int, int]]) -> list[Span]:
    """From the subject's first occurrence to the object's, in the first sentence with both."""
    for start, end in sentences:
        s, o = _occurrences(subject, text, start, end), _occurrences(obj, text, start, end)
        if s and o:
            return [Span(start=min(s[0].start, o[0].start), end=max(s[0].end, o[0].end))]
    return []
