"""Entity resolution: which stored entity a name of a type refers to.

Exact first (the normalised name or an alias, within the type), then fuzzy (rapidfuzz's
ratio of normalised names, within the type, at least `fuzzy_min_ratio`). Types never mix: a
person and a company of one name stay two entities. A fuzzy match must also have the same
shape: as many words, and the same markers where either has one (numbers, roman numerals,
initials, Jr and Sr), so that a spelling slip joins ("Vladmir Lenin") but a sequel, a
generation or a sub-group does not ("World War I" and "World War II", "Edgar Kaiser Sr." and
"Edgar Kaiser Jr.", "Super Junior" and "Super Junior-M", all at a ratio over 90).
"""

from __future__ import annotations

import re
import unicodedata

from rapidfuzz import fuzz, process

__all__ = ["NameIndex", "normalise", "same_shape", "strip_possessive"]

_PUNCT = re.compile(r"[^\w\s]")
_DASH = re.compile(r"[-\u2010-\u2015/]")  # words joined by a dash or slash: "Super Junior-M"
_SPACE = re.compile(r"\s+")
_POSSESSIVE = re.compile(r"\s*['\u2019]s?\s*$")  # "Nancy Sinatra's" is Nancy Sinatra
_MARKER = re.compile(r"^(\w|.*\d.*|[ivx]+|jr|sr)$")  # a word a fuzzy match may not change
_CANDIDATES = 5  # fuzzy candidates looked at for one of the same shape


def strip_possessive(name: str) -> str:
    """`name` without a final possessive ("Nancy Sinatra's" -> "Nancy Sinatra")."""
    return _POSSESSIVE.sub("", name)


def normalise(name: str) -> str:
    """The form names are compared in: Unicode-compatible, case-folded, a final possessive
    dropped, dashes made spaces, other punctuation dropped, whitespace collapsed ('The  U.S.'
    and 'the us' are one, as are 'Coca-Cola' and 'Coca Cola')."""
    name = strip_possessive(unicodedata.normalize("NFKC", name).casefold())
    return _SPACE.sub(" ", _PUNCT.sub("", _DASH.sub(" ", name))).strip()


def same_shape(a: str, b: str) -> bool:
    """Whether two normalised names have as many words and the same markers (numbers, roman
    numerals, initials, jr, sr) in the same places."""
    wa, wb = a.split(), b.split()
    return len(wa) == len(wb) and all(
        x == y for x, y in zip(wa, wb, strict=True) if _MARKER.match(x) or _MARKER.match(y)
    )


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
        near = process.extract(
            norm, names.keys(), scorer=fuzz.ratio, score_cutoff=self.fuzzy_min_ratio, limit=_CANDIDATES
        )
        shaped = [name for name, _, _ in near if same_shape(norm, name)]
        return (names[shaped[0]], "fuzzy") if shaped else None
