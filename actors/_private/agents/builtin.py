"""Agents that ship with swarmray. They do real, checkable work for the demo and tests."""

from __future__ import annotations

import hashlib
import re
import statistics
import zlib
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, model_validator

from actors._private.agents.agent import Agent
from actors._private.task import Task
from models._private.core.errors import PayloadError
from models._private.memory.schema import TIERS

__all__ = [
    "AmortizeAgent",
    "ChecksumAgent",
    "DeduplicateAgent",
    "FactorizeAgent",
    "InvoiceAgent",
    "KeywordsAgent",
    "MemoryAgent",
    "NumberStatsAgent",
    "ReadabilityAgent",
    "TextStatsAgent",
    "ValidateAgent",
]

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")


# -- payloads: what each capability takes (`swarm capabilities NAME` shows them) --------------


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextInput(_Payload):
    """A text to analyse."""

    text: str = Field(description="The text.")


class TextStatsOutput(BaseModel):
    """What `text.stats` returns."""

    characters: int = Field(description="Characters in the text.")
    words: int = Field(description="Words in the text.")
    sentences: int = Field(description="Sentences in the text.")
    unique_words: int = Field(description="Distinct words, case-folded.")
    mean_word_length: float = Field(description="Mean characters per word (0 for no words).")
    top_words: list[tuple[str, int]] = Field(description="The most frequent words, each with its count.")


class KeywordsInput(TextInput):
    """A text and how many keywords to return."""

    top_n: int | None = Field(None, gt=0, description="Keywords to return; default: the agent's top_n.")


class ValidateInput(_Payload):
    """A document and the JSON Schema to check it against."""

    json_schema: dict[str, Any] = Field(alias="schema", description="A JSON Schema object.")
    document: Any = Field(None, description="The JSON value to check.")


class DeduplicateInput(_Payload):
    """Records and the field whose repeats are dropped."""

    records: list[Any] = Field(description="The records (objects), in order.")
    key: str = Field(description="The field that identifies a record.")


class NumbersInput(_Payload):
    """A list of numbers."""

    numbers: list[StrictInt | StrictFloat] = Field(min_length=1, description="At least one number.")


class FactorizeInput(_Payload):
    """An integer to factorise."""

    n: StrictInt = Field(ge=2, le=10**15, description="An integer from 2 to 10**15.")


Money = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class InvoiceItem(_Payload):
    """One line of an invoice."""

    description: str = Field("", description="What the line is for.")
    quantity: Money = Field(description="How many (a number, or a decimal string).")
    unit_price: Money = Field(description="Price of one (a number, or a decimal string).")


class InvoiceInput(_Payload):
    """Invoice lines and a tax rate."""

    items: list[InvoiceItem] = Field(min_length=1, description="The lines, at least one.")
    tax_rate: Money = Field(Decimal(0), description="Tax as a fraction of the subtotal (0.2 = 20 %).")


class AmortizeInput(_Payload):
    """A fixed-rate loan."""

    principal: float = Field(gt=0, description="The amount borrowed.")
    annual_rate: float = Field(ge=0, description="Yearly interest rate as a fraction (0.05 = 5 %).")
    months: StrictInt = Field(gt=0, description="Number of monthly payments.")


Scope = Literal["swarm", "global"]


class MemoryStoreInput(_Payload):
    """A record to store (replacing one with the same id)."""

    id: str = Field(min_length=1, max_length=256, description="The record's id.")
    text: str = Field(min_length=1, description="The text, searchable densely and lexically.")
    metadata: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Filterable fields."
    )
    tier: Literal[TIERS] | None = Field(None, description="Tier to store in; default long_term.")
    importance: float | None = Field(None, ge=0, le=1, description="0 to 1; high values are kept longer.")
    ttl_s: float | None = Field(None, gt=0, description="Seconds until the record expires.")
    scope: Scope = Field("swarm", description="The swarm's memory or the global one.")
    namespace: str | None = Field(
        None, description="Namespace in that memory; default the swarm's name (or 'global')."
    )


class MemorySearchInput(_Payload):
    """A search of the swarm's memory, the global one, or both."""

    query: str | None = Field(None, description="Query text (dense search may use a vector instead).")
    k: int = Field(5, gt=0, description="Hits to return.")
    mode: Literal["hybrid", "dense", "lexical"] = Field("hybrid", description="Which indexes to ask.")
    filter: dict[str, Any] | None = Field(None, description="Metadata filter, e.g. {'year': {'gte': 2020}}.")
    tiers: list[Literal[TIERS]] | None = Field(None, description="Tiers to search; default all.")
    namespaces: list[str] | None = Field(
        None, description="Namespaces to search; default the memory's own (the swarm's name, or 'global')."
    )
    scope: Literal["swarm", "global", "both"] = Field("swarm", description="Which memory to search.")


class MemoryDeleteInput(_Payload):
    """Records to delete, by `id` or `ids`."""

    id: str | None = Field(None, description="One record's id.")
    ids: list[str] = Field(default_factory=list, description="Several records' ids.")
    scope: Scope = Field("swarm", description="The swarm's memory or the global one.")

    @model_validator(mode="after")
    def _some_id(self) -> MemoryDeleteInput:
        if self.id is None and not self.ids:
            raise ValueError("give `id` or `ids`")
        return self


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _sentences(text: str) -> int:
    return max(1, len(_SENTENCE_END.findall(text.strip()))) if text.strip() else 0


class TextStatsAgent(Agent):
    """`text.stats`: characters, words, sentences, unique words and the most frequent words."""

    capabilities = ("text.stats",)
    payloads = {"text.stats": TextInput}
    outputs = {"text.stats": TextStatsOutput}
    annotations = {"text.stats": {"readOnlyHint": True, "idempotentHint": True, "openWorldHint": False}}
    descriptions = {
        "text.stats": "Characters, words, sentences, unique words and the most frequent words of a text."
    }

    def __init__(self, top_n: int = 5):
        self.top_n = top_n

    async def handle(self, task: Task) -> dict:
        text = task.payload["text"]
        words = _words(text)
        return {
            "characters": len(text),
            "words": len(words),
            "sentences": _sentences(text),
            "unique_words": len(set(words)),
            "mean_word_length": round(sum(map(len, words)) / len(words), 3) if words else 0.0,
            "top_words": Counter(words).most_common(self.top_n),
        }


class KeywordsAgent(Agent):
    """`text.keywords`: the most frequent words that are not English stop words."""

    capabilities = ("text.keywords",)
    payloads = {"text.keywords": KeywordsInput}
    descriptions = {"text.keywords": "The most frequent words of a text that are not English stop words."}

    def __init__(self, top_n: int = 5):
        # scikit-learn comes with sentence-transformers; its list is the usual one.
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        self.top_n = top_n
        self.stop_words = ENGLISH_STOP_WORDS

    async def handle(self, task: Task) -> list:
        words = [w for w in _words(task.payload["text"]) if w not in self.stop_words and len(w) > 2]
        return Counter(words).most_common(task.payload["top_n"] or self.top_n)


class ReadabilityAgent(Agent):
    """`text.readability`: Flesch reading ease (higher is easier; 60-70 is plain English)."""

    capabilities = ("text.readability",)
    payloads = {"text.readability": TextInput}
    descriptions = {
        "text.readability": "Flesch reading ease of a text (higher is easier; 60-70 is plain English)."
    }

    @staticmethod
    def syllables(word: str) -> int:
        """Counts vowel groups, dropping a silent final 'e'; at least one per word."""
        groups = re.findall(r"[aeiouy]+", word)
        n = len(groups) - (1 if word.endswith("e") and not word.endswith("le") else 0)
        return max(1, n)

    async def handle(self, task: Task) -> dict:
        text = task.payload["text"]
        words = _words(text)
        if not words:
            raise ValueError("payload.text has no words")
        sentences = _sentences(text)
        syllables = sum(self.syllables(w) for w in words)
        score = 206.835 - 1.015 * len(words) / sentences - 84.6 * syllables / len(words)
        return {
            "flesch_reading_ease": round(score, 2),
            "words": len(words),
            "sentences": sentences,
            "syllables": syllables,
        }


class ChecksumAgent(Agent):
    """`data.checksum`: SHA-256, CRC-32, size and zlib-compressed size of a text."""

    capabilities = ("data.checksum",)
    payloads = {"data.checksum": TextInput}
    descriptions = {"data.checksum": "SHA-256, CRC-32, size and zlib-compressed size of a text."}

    def handle(self, task: Task) -> dict:
        data = task.payload["text"].encode()
        return {
            "sha256": hashlib.sha256(data).hexdigest(),
            "crc32": zlib.crc32(data),
            "bytes": len(data),
            "compressed_bytes": len(zlib.compress(data, 9)),
        }


class ValidateAgent(Agent):
    """`data.validate`: checks `document` against a JSON Schema `schema`, listing each error."""

    capabilities = ("data.validate",)
    payloads = {"data.validate": ValidateInput}
    descriptions = {"data.validate": "Checks a JSON document against a JSON Schema, listing each error."}

    def handle(self, task: Task) -> dict:
        import jsonschema  # a Ray dependency; the reference validator

        schema = task.payload["schema"]
        validator_cls = jsonschema.validators.validator_for(schema)
        try:
            validator_cls.check_schema(schema)
        except jsonschema.SchemaError as e:
            raise PayloadError("data.validate", [("schema", e.message)]) from None
        errors = sorted(
            validator_cls(schema).iter_errors(task.payload.get("document")),
            key=lambda e: list(e.absolute_path),
        )
        return {
            "valid": not errors,
            "errors": [{"path": "/".join(map(str, e.absolute_path)), "message": e.message} for e in errors],
        }


class DeduplicateAgent(Agent):
    """`data.deduplicate`: drops records whose `key` field repeats, keeping the first."""

    capabilities = ("data.deduplicate",)
    payloads = {"data.deduplicate": DeduplicateInput}
    descriptions = {
        "data.deduplicate": "Drops the records whose key field repeats, keeping the first of each."
    }

    async def handle(self, task: Task) -> dict:
        records, key = task.payload["records"], task.payload["key"]
        seen, kept = set(), []
        for record in records:
            value = record.get(key) if isinstance(record, dict) else None
            marker = repr(value)
            if marker not in seen:
                seen.add(marker)
                kept.append(record)
        return {"records": kept, "dropped": len(records) - len(kept)}


class NumberStatsAgent(Agent):
    """`math.stats`: count, mean, median, standard deviation, extremes and quartiles."""

    capabilities = ("math.stats",)
    payloads = {"math.stats": NumbersInput}
    descriptions = {
        "math.stats": "Count, mean, median, standard deviation, extremes and quartiles of numbers."
    }

    async def handle(self, task: Task) -> dict:
        xs = task.payload["numbers"]
        quartiles = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
        return {
            "count": len(xs),
            "mean": statistics.fmean(xs),
            "median": statistics.median(xs),
            "stdev": statistics.stdev(xs) if len(xs) > 1 else 0.0,
            "min": min(xs),
            "max": max(xs),
            "quartiles": quartiles,
        }


class FactorizeAgent(Agent):
    """`math.factorize`: prime factors of an integer up to 10**15, by trial division."""

    capabilities = ("math.factorize",)
    payloads = {"math.factorize": FactorizeInput}
    descriptions = {"math.factorize": "Prime factors of an integer up to 10**15, by trial division."}

    def handle(self, task: Task) -> dict:
        n = task.payload["n"]
        factors, rest, p = [], n, 2
        while p * p <= rest:
            while rest % p == 0:
                factors.append(p)
                rest //= p
            p += 1 if p == 2 else 2
        if rest > 1:
            factors.append(rest)
        return {"n": n, "factors": factors, "prime": factors == [n]}


_CENT = Decimal("0.01")


class InvoiceAgent(Agent):
    """`finance.invoice`: line totals, subtotal, tax and total, rounded half-up to cents."""

    capabilities = ("finance.invoice",)
    payloads = {"finance.invoice": InvoiceInput}
    descriptions = {
        "finance.invoice": "Line totals, subtotal, tax and total of an invoice, rounded half-up to cents."
    }

    async def handle(self, task: Task) -> dict:
        lines, subtotal = [], Decimal(0)
        for item in task.payload["items"]:
            total = (item["quantity"] * item["unit_price"]).quantize(_CENT, ROUND_HALF_UP)
            subtotal += total
            lines.append({"description": item["description"], "total": str(total)})
        tax = (subtotal * task.payload["tax_rate"]).quantize(_CENT, ROUND_HALF_UP)
        return {"lines": lines, "subtotal": str(subtotal), "tax": str(tax), "total": str(subtotal + tax)}


class AmortizeAgent(Agent):
    """`finance.amortize`: monthly payment and total interest of a fixed-rate loan."""

    capabilities = ("finance.amortize",)
    payloads = {"finance.amortize": AmortizeInput}
    descriptions = {"finance.amortize": "Monthly payment and total interest of a fixed-rate loan."}

    async def handle(self, task: Task) -> dict:
        principal, months = task.payload["principal"], task.payload["months"]
        r = task.payload["annual_rate"] / 12
        payment = principal / months if r == 0 else principal * r / (1 - (1 + r) ** -months)
        return {
            "monthly_payment": round(payment, 2),
            "total_interest": round(payment * months - principal, 2),
        }


class MemoryAgent(Agent):
    """`memory.store`, `memory.search`, `memory.delete` on the swarm's memory (or `scope: global`).

    store -> {"id"}; search -> hits ({"id", "text", "score", "ranks"}); delete -> {"deleted"}.
    The payloads are `MemoryStoreInput`, `MemorySearchInput` and `MemoryDeleteInput`.
    """

    capabilities = ("memory.store", "memory.search", "memory.delete")
    payloads = {
        "memory.store": MemoryStoreInput,
        "memory.search": MemorySearchInput,
        "memory.delete": MemoryDeleteInput,
    }
    descriptions = {
        "memory.store": "Stores a record in the swarm's memory or the global one, replacing one "
        "with the same id; returns the id.",
        "memory.search": "Searches the swarm's memory, the global one or both (hybrid, dense or "
        "lexical); returns the hits, best first.",
        "memory.delete": "Deletes records by id from the swarm's memory or the global one; "
        "returns how many there were.",
    }

    async def handle(self, task: Task) -> Any:
        p, mem = dict(task.payload), self.context.memory
        scope = p.pop("scope")
        if task.capability == "memory.store":
            record = {k: v for k, v in p.items() if v is not None}  # unset: the memory's defaults
            record.setdefault("namespace", self.context.swarm if scope == "swarm" else "global")
            (stored,) = await mem.upsert([record], scope=scope)
            return {"id": stored}
        if task.capability == "memory.search":
            hits = await mem.search(p.pop("query"), p.pop("k"), scope=scope, **p)
            return [
                {
                    "id": h["record"]["id"],
                    "text": h["record"]["text"],
                    "score": round(h["score"], 4),  # fused: compares hits of this search only
                    "ranks": h["ranks"],
                    "scores": {index: round(x, 4) for index, x in h["scores"].items()},  # raw
                }
                for h in hits
            ]
        ids = [*([p["id"]] if p["id"] is not None else []), *p["ids"]]
        return {"deleted": await mem.delete(ids, scope=scope)}
