"""Entity resolution: which stored entity a name of a type refers to.

Exact first (the normalised name or an alias, within the type), then fuzzy (rapidfuzz's
ratio of normalised names, within the type, at least `fuzzy_min_ratio`). Types never mix: a
person and a company of one name stay two entities.
"""

from __future__ import annotations

import re
import unicodedata

from rapidfuzz import fuzz, process

__all__ = ["NameIndex", "normalise"]

_PUNCT = re.compile(r"[^\w\s]")
_SPACE = re.compile(r"\s+")


def normalise(name: str) -> str:
    """The form names are compared in: Unicode-compatible, case-folded, punctuation dropped,
    whitespace collapsed ('The  U.S.' and 'the us' are one)."""
    name = unicodedata.normalize("NFKC", name).casefold()
    return _SPACE.sub(" ", _PUNCT.sub("", name)).strip()


class NameIndex:
    """Normalised names and aliases of one namespace's entities, per type, in memory."""

    def __init__(self, fuzzy_min_ratio: float):
        self.fuzzy_min_ratio = fuzzy_min_ratio
        self._by_type: dict[str, dict[str, str]] = {}  # type -> normalised name -> entity id

    def add(self, type_: str, norm: str, entity_id: str) -> None:
        if norm:
            self._by_type.setdefault(type_, {}).setdefault(norm, entity_id)

    def remove(self, type_: str, norm: str, entity_id: str) -> None:
        names = self._by_type.get(type_, {})
        if names.get(norm) == entity_id:
            del names[norm]

    def types(self) -> list[str]:
        """The entity types this index has held names of."""
        return list(self._by_type)

    def exact(self, type_: str, norm: str) -> str | None:
        """The entity id `norm` names exactly (a name or an alias), or None."""
        return self._by_type.get(type_, {}).get(norm)

    def find(self, type_: str, norm: str) -> tuple[str, str] | None:
        """(entity id, how: 'exact' or 'fuzzy') of the entity `norm` names, or None."""
        names = self._by_type.get(type_, {})
        if norm in names:
            return names[norm], "exact"
        if self.fuzzy_min_ratio >= 100 or not names or not norm:
            return None
        best = process.extractOne(norm, names.keys(), scorer=fuzz.ratio, score_cutoff=self.fuzzy_min_ratio)
        return (names[best[0]], "fuzzy") if best else None
