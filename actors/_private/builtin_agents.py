"""Agents that ship with swarmray. They do real, checkable work for the demo and tests."""

from __future__ import annotations

import hashlib
import re
import statistics
import zlib
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from actors._private.agent import Agent
from actors._private.task import Task

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


def _text(task: Task) -> str:
    text = task.payload.get("text")
    if not isinstance(text, str):
        raise ValueError("payload.text must be a string")
    return text


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _sentences(text: str) -> int:
    return max(1, len(_SENTENCE_END.findall(text.strip()))) if text.strip() else 0


class TextStatsAgent(Agent):
    """`text.stats`: characters, words, sentences, unique words and the most frequent words."""

    capabilities = ("text.stats",)

    def __init__(self, top_n: int = 5):
        self.top_n = top_n

    async def handle(self, task: Task) -> dict:
        text = _text(task)
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

    def __init__(self, top_n: int = 5):
        # scikit-learn comes with sentence-transformers; its list is the usual one.
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        self.top_n = top_n
        self.stop_words = ENGLISH_STOP_WORDS

    async def handle(self, task: Task) -> list:
        words = [w for w in _words(_text(task)) if w not in self.stop_words and len(w) > 2]
        return Counter(words).most_common(int(task.payload.get("top_n", self.top_n)))


class ReadabilityAgent(Agent):
    """`text.readability`: Flesch reading ease (higher is easier; 60-70 is plain English)."""

    capabilities = ("text.readability",)

    @staticmethod
    def syllables(word: str) -> int:
        """Counts vowel groups, dropping a silent final 'e'; at least one per word."""
        groups = re.findall(r"[aeiouy]+", word)
        n = len(groups) - (1 if word.endswith("e") and not word.endswith("le") else 0)
        return max(1, n)

    async def handle(self, task: Task) -> dict:
        text = _text(task)
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

    def handle(self, task: Task) -> dict:
        data = _text(task).encode()
        return {
            "sha256": hashlib.sha256(data).hexdigest(),
            "crc32": zlib.crc32(data),
            "bytes": len(data),
            "compressed_bytes": len(zlib.compress(data, 9)),
        }


class ValidateAgent(Agent):
    """`data.validate`: checks `document` against a JSON Schema `schema`, listing each error."""

    capabilities = ("data.validate",)

    def handle(self, task: Task) -> dict:
        import jsonschema  # a Ray dependency; the reference validator

        schema = task.payload.get("schema")
        if not isinstance(schema, dict):
            raise ValueError("payload.schema must be a JSON Schema object")
        validator_cls = jsonschema.validators.validator_for(schema)
        validator_cls.check_schema(schema)
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

    async def handle(self, task: Task) -> dict:
        records, key = task.payload.get("records"), task.payload.get("key")
        if not isinstance(records, list) or not isinstance(key, str):
            raise ValueError("payload needs `records` (a list of objects) and `key` (a field name)")
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

    async def handle(self, task: Task) -> dict:
        xs = task.payload.get("numbers")
        if (
            not isinstance(xs, list)
            or not xs
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        ):
            raise ValueError("payload.numbers must be a non-empty list of numbers")
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

    def handle(self, task: Task) -> dict:
        n = task.payload.get("n")
        if not isinstance(n, int) or isinstance(n, bool) or not 2 <= n <= 10**15:
            raise ValueError("payload.n must be an integer from 2 to 10**15")
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


def _money(x: Any, field: str) -> Decimal:
    try:
        value = Decimal(str(x))
    except Exception:
        raise ValueError(f"{field} must be a number, got {x!r}") from None
    if not value.is_finite():
        raise ValueError(f"{field} must be finite, got {x!r}")
    return value


class InvoiceAgent(Agent):
    """`finance.invoice`: line totals, subtotal, tax and total, rounded half-up to cents."""

    capabilities = ("finance.invoice",)

    async def handle(self, task: Task) -> dict:
        items = task.payload.get("items")
        if not isinstance(items, list) or not items:
            raise ValueError("payload.items must be a non-empty list")
        tax_rate = _money(task.payload.get("tax_rate", 0), "tax_rate")
        lines, subtotal = [], Decimal(0)
        for i, item in enumerate(items):
            qty = _money(item.get("quantity"), f"items[{i}].quantity")
            price = _money(item.get("unit_price"), f"items[{i}].unit_price")
            if qty < 0 or price < 0:
                raise ValueError(f"items[{i}] has a negative quantity or price")
            total = (qty * price).quantize(_CENT, ROUND_HALF_UP)
            subtotal += total
            lines.append({"description": item.get("description", ""), "total": str(total)})
        tax = (subtotal * tax_rate).quantize(_CENT, ROUND_HALF_UP)
        return {"lines": lines, "subtotal": str(subtotal), "tax": str(tax), "total": str(subtotal + tax)}


class AmortizeAgent(Agent):
    """`finance.amortize`: monthly payment and total interest of a fixed-rate loan."""

    capabilities = ("finance.amortize",)

    async def handle(self, task: Task) -> dict:
        p = task.payload
        principal = float(p.get("principal", 0))
        annual_rate = float(p.get("annual_rate", -1))
        months = p.get("months")
        if principal <= 0 or annual_rate < 0 or not isinstance(months, int) or months <= 0:
            raise ValueError("payload needs principal > 0, annual_rate >= 0 and whole months > 0")
        r = annual_rate / 12
        payment = principal / months if r == 0 else principal * r / (1 - (1 + r) ** -months)
        return {
            "monthly_payment": round(payment, 2),
            "total_interest": round(payment * months - principal, 2),
        }


class MemoryAgent(Agent):
    """`memory.store`, `memory.search`, `memory.delete` on the swarm's memory (or `scope: global`).

    store: {"id", "text", "metadata"?, "tier"?, "importance"?, "ttl_s"?, "scope"?} -> {"id"}
    search: {"query", "k"?, "mode"?, "filter"?, "tiers"?, "scope"?: swarm | global | both} -> hits
    delete: {"ids", "scope"?} -> {"deleted"}
    """

    capabilities = ("memory.store", "memory.search", "memory.delete")

    async def handle(self, task: Task) -> Any:
        p, mem = dict(task.payload), self.context.memory
        scope = p.pop("scope", "swarm")
        if task.capability == "memory.store":
            p.setdefault("namespace", self.context.swarm if scope == "swarm" else "global")
            (stored,) = await mem.upsert([p], scope=scope)
            return {"id": stored}
        if task.capability == "memory.search":
            hits = await mem.search(p.pop("query", None), int(p.pop("k", 5)), scope=scope, **p)
            return [
                {
                    "id": h["record"]["id"],
                    "text": h["record"]["text"],
                    "score": round(h["score"], 4),
                    "ranks": h["ranks"],
                }
                for h in hits
            ]
        return {"deleted": await mem.delete(list(p.get("ids", [])), scope=scope)}
