"""Metadata filters for memory search: `{"field": value | {"$op": operand}}` compiled once into
a predicate over a record's metadata.

Operators: `$eq` (what a bare value means), `$ne`, `$in`, `$nin` (with a list) and `$gt`,
`$gte`, `$lt`, `$lte` (with a number; a field that is not a number, or a bool, never matches).
A malformed spec is refused before any search runs, with the offending field in the message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models._private.core.errors import MemoryInputError
from models._private.memory.schema import Scalar

__all__ = ["compile_filter"]

_OPS = {"$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte"}


def compile_filter(spec: dict[str, Any] | None) -> Callable[[dict[str, Scalar]], bool]:
    """A predicate over metadata from {"field": value | {"$op": operand}}; None keeps everything.

    Raises:
        MemoryInputError: the spec is not a mapping, names an unknown operator, or gives an
            operator the wrong kind of operand.
    """
    if spec is None:
        return lambda _m: True
    if not isinstance(spec, dict):
        raise MemoryInputError(
            "filter", f"must be a mapping of field to condition, got {type(spec).__name__}"
        )
    checks: list[Callable[[dict[str, Scalar]], bool]] = []
    for key, cond in spec.items():
        conds = cond if isinstance(cond, dict) else {"$eq": cond}
        for op, arg in conds.items():
            if op not in _OPS:
                raise MemoryInputError(f"filter.{key}", f"unknown operator {op!r}; use one of {sorted(_OPS)}")
            if op in ("$in", "$nin") and not isinstance(arg, list):
                raise MemoryInputError(f"filter.{key}.{op}", "needs a list")
            if op in ("$gt", "$gte", "$lt", "$lte") and not isinstance(arg, (int, float)):
                raise MemoryInputError(f"filter.{key}.{op}", f"needs a number, got {arg!r}")
            checks.append(_check(key, op, arg))
    return lambda m: all(c(m) for c in checks)


def _check(key: str, op: str, arg: Any) -> Callable[[dict[str, Scalar]], bool]:
    def num(m: dict[str, Scalar]) -> float | None:
        v = m.get(key)
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    return {
        "$eq": lambda m: m.get(key) == arg,
        "$ne": lambda m: m.get(key) != arg,
        "$in": lambda m: m.get(key) in arg,
        "$nin": lambda m: m.get(key) not in arg,
        "$gt": lambda m: (v := num(m)) is not None and v > arg,
        "$gte": lambda m: (v := num(m)) is not None and v >= arg,
        "$lt": lambda m: (v := num(m)) is not None and v < arg,
        "$lte": lambda m: (v := num(m)) is not None and v <= arg,
    }[op]
