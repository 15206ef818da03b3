"""`swarm memory load`: records from a JSONL file into a memory store, in batches, with progress."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cluster._private.connection import call, existing
from models._private.core import names
from models._private.core.errors import MemoryInputError, SwarmrayError
from models._private.memory.schema import Record

__all__ = ["load_records", "records_of_file"]

_GIVEN = {"id", "namespace", "text", "metadata", "tier", "importance", "ttl_s"}


def records_of_file(path: str, namespace: str) -> list[dict[str, Any]]:
    """The records of a JSONL file (one object a line: text, and optionally id, namespace,
    metadata, tier, importance, ttl_s), each checked before anything is written. A record
    without an id gets `<file stem>:<line>`, so loading the file again replaces, not repeats.

    Raises:
        MemoryInputError: a line that is not a JSON object or not a record (file:line, reason).
    """
    file = Path(path)
    if not file.is_file():
        raise MemoryInputError(path, "no such file")
    records = []
    for n, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            data = json.loads(line)
        except ValueError as e:
            raise MemoryInputError(where, f"not JSON ({e})") from None
        if not isinstance(data, dict):
            raise MemoryInputError(where, "not a JSON object")
        if unknown := sorted(set(data) - _GIVEN):
            raise MemoryInputError(where, f"unknown field(s) {unknown}; known: {sorted(_GIVEN)}")
        record = {"id": f"{file.stem}:{n}", "namespace": namespace, **data}
        try:
            Record.model_validate(record)
        except ValidationError as e:
            first = e.errors()[0]
            raise MemoryInputError(f"{where}: {'.'.join(map(str, first['loc']))}", first["msg"]) from None
        records.append(record)
    return records


def load_records(
    system: str,
    store: str,
    records: list[dict[str, Any]],
    batch: int = 256,
    progress: Callable[[str, int, int], None] | None = None,
) -> int:
    """Upserts `records` into the memory store `store` of `system`, `batch` at a time (each
    durable before the next is sent); returns how many were stored.

    Raises:
        SwarmrayError: the system has no memory store of that name.
    """
    handle = existing(names.memory(store), system)
    if handle is None:
        raise SwarmrayError(
            f"system {system!r} has no memory store {store!r} (a swarm's `memory:`, or global)"
        )
    held = set(call(handle.stats.remote).get("namespaces") or [])
    if bad := sorted({r["namespace"] for r in records} - held):  # before the first write
        raise MemoryInputError("namespace", f"memory:{store} holds {sorted(held)}, not {bad}")
    done = 0
    for start in range(0, len(records), batch):
        chunk = records[start : start + batch]
        call(lambda chunk=chunk: handle.upsert.remote(chunk))
        done += len(chunk)
        if progress is not None:
            progress("records stored", done, len(records))
    return done
