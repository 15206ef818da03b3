"""Reading and verifying the audit log that `audit.AuditLog` writes: a writer's files in order
(`segments`, rotated ones first), every record of a directory merged by time (`read_records`),
and `verify`, which re-hashes each chain, checks its links and checkpoints' signatures, and
holds it to the heads signed elsewhere (witnesses)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from serve._private.auth.audit import GENESIS, record_hash, signed_by

__all__ = ["Verdict", "read_records", "segments", "verify", "verify_directory"]


def segments(directory: str) -> dict[str, list[str]]:
    """Every writer's files in `directory`, oldest first: its rotated files
    (`<writer>.jsonl.<last seq>`) by sequence, then `<writer>.jsonl`."""
    found: dict[str, list[tuple[int, str]]] = {}
    for name in os.listdir(directory):
        writer, dot, rest = name.partition(".jsonl")
        if not dot or not (rest == "" or (rest.startswith(".") and rest[1:].isdigit())):
            continue
        order = int(rest[1:]) if rest else 2**63  # the live file last
        found.setdefault(writer, []).append((order, os.path.join(directory, name)))
    return {w: [p for _, p in sorted(files)] for w, files in sorted(found.items())}


@dataclass
class Verdict:
    """What `verify` found in one writer's file.

    `first_bad` is the 1-based line of the first problem (None when the chain holds) and `reason`
    says what it is. `unwitnessed` counts the records after the last checkpoint (or witness)
    that no signature covers yet; `skipped` the records before the checkpoint a `since` check
    started from, which it took on that checkpoint's signature.
    """

    writer: str
    records: int
    checkpoints: int
    first_bad: int | None = None
    reason: str = ""
    unwitnessed: int = 0
    skipped: int = 0
    file: str = ""  # the file of the first bad line

    @property
    def ok(self) -> bool:
        return self.first_bad is None


def _lines(path: str) -> Iterator[tuple[int, Any]]:
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                yield number, json.loads(line)
            except ValueError:
                yield number, None


def _anchor(paths: list[str], since: float) -> tuple[int, int]:
    """Where the last checkpoint signed at or before `since` is: (file, line); (0, 0): none."""
    anchor = (0, 0)
    for index, path in enumerate(paths):
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                if line.startswith(b'{"checkpoint"'):  # canonical JSON: keys sorted
                    try:
                        if json.loads(line)["checkpoint"]["time"] <= since:
                            anchor = (index, number)
                    except (ValueError, KeyError, TypeError):
                        continue
    return anchor


def _starts_with_checkpoint(path: str) -> bool:
    with open(path, "rb") as f:
        return f.readline().startswith(b'{"checkpoint"')


def verify(
    path: str | list[str],
    public_key: Ed25519PublicKey,
    witness: dict[str, Any] | None = None,
    since: float | None = None,
) -> Verdict:
    """Checks one writer's file, or its files oldest first (`segments`) as one chain; `witness`
    is a checkpoint the live writer signed just now.

    A chain rebuilt after an edit (every later hash recomputed) holds together, but not with the
    next checkpoint: that checkpoint is then the first bad line, and the edit lies after the one
    before it. With `since` (a Unix time), the check starts at the last checkpoint signed at or
    before it, whose signature vouches for everything before: a long log is checked in the
    time its recent part takes. A rotated file starts with the checkpoint its predecessor ended
    with, so the oldest file kept (the older ones archived away) is checked from there too,
    its earlier records counted in `skipped`.
    """
    paths = [path] if isinstance(path, str) else list(path)
    writer = os.path.basename(paths[0]).partition(".jsonl")[0]
    verdict = Verdict(writer, 0, 0)
    seq, head = 0, GENESIS
    hashes: dict[int, str] = {0: GENESIS}
    last_signed = 0  # the highest seq a valid signature covers
    start = _anchor(paths, since) if since is not None else (0, 0)
    if start == (0, 0) and _starts_with_checkpoint(paths[0]):
        start = (0, 1)
    where = paths[0]

    def bad(line: int, reason: str) -> Verdict:
        verdict.first_bad, verdict.reason, verdict.file = line, reason, os.path.basename(where)
        return verdict

    def signed(line: int, entry: dict[str, Any], what: str) -> str | None:
        body = entry.get("checkpoint")
        if not signed_by(public_key, entry):
            return f"{what} at line {line} is not signed by this key"
        if body.get("writer") != writer:
            return f"{what} names writer {body.get('writer')!r}, not {writer!r}"
        if hashes.get(body.get("seq")) != body.get("head"):
            return (
                f"{what} signs seq {body.get('seq')} with a head this file does not have there "
                f"(records after seq {last_signed} were changed)"
            )
        return None

    line = 0
    for index, where in enumerate(paths):
        if index < start[0]:
            continue
        for line, entry in _lines(where):
            if (index, line) < start:
                continue
            if not isinstance(entry, dict):
                return bad(line, "not a JSON object")
            if (index, line) == start:  # where a check starts: the chain continues from this head
                body = entry.get("checkpoint")
                if not isinstance(body, dict):
                    return bad(line, "not a checkpoint")
                hashes = {body.get("seq"): body.get("head")}
                if problem := signed(line, entry, "checkpoint"):
                    return bad(line, problem)
                seq, head = body["seq"], body["head"]
                verdict.checkpoints, verdict.skipped, last_signed = 1, seq, seq
                continue
            if "checkpoint" in entry:
                if problem := signed(line, entry, "checkpoint"):
                    return bad(line, problem)
                verdict.checkpoints += 1
                last_signed = max(last_signed, entry["checkpoint"]["seq"])
                continue
            if entry.get("seq") != seq + 1:
                return bad(line, f"expected seq {seq + 1}, found {entry.get('seq')}")
            if entry.get("prev") != head:
                return bad(line, f"seq {seq + 1} does not link to the record before it")
            if record_hash(entry) != entry.get("hash"):
                return bad(line, f"seq {seq + 1} does not match its hash (edited)")
            seq, head = entry["seq"], entry["hash"]
            hashes[seq] = head
            verdict.records += 1
    if witness is not None and witness.get("checkpoint", {}).get("seq", 0) >= verdict.skipped:
        body = witness.get("checkpoint", {})
        end = line + 1  # where the missing lines would begin
        cut = body.get("seq", 0) > seq
        if cut:  # the head's own hash cannot be in the file; its signature still must hold
            hashes[body["seq"]] = body.get("head")
        if problem := signed(end, witness, "the writer's signed head"):
            return bad(end, problem)
        if cut:
            return bad(end, f"the writer's signed head is at seq {body['seq']}; the file ends at {seq} (cut)")
        last_signed = max(last_signed, body["seq"])
    verdict.unwitnessed = seq - last_signed
    return verdict


def verify_directory(
    directory: str,
    public_key: Ed25519PublicKey,
    witnesses: dict[str, dict[str, Any]] | None = None,
    since: float | None = None,
) -> list[Verdict]:
    """`verify` over every writer's files in `directory`; a witnessed writer with no file fails."""
    witnesses = witnesses or {}
    files = segments(directory)
    verdicts = [verify(paths, public_key, witnesses.get(w), since) for w, paths in files.items()]
    for missing in sorted(set(witnesses) - set(files)):
        verdicts.append(Verdict(missing, 0, 0, 1, f"the log of writer {missing!r} is missing"))
    return verdicts


def read_records(
    directory: str, key_id: str | None = None, since: float | None = None, route: str | None = None
) -> list[dict[str, Any]]:
    """Every writer's records (not checkpoints), oldest first, each with its `writer`;
    filtered by key id, time and route prefix. Read only: `verify` checks them."""
    found = []
    for writer, path in ((w, Path(p)) for w, paths in segments(directory).items() for p in paths):
        with path.open() as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a torn last line, which the writer cuts on reopening
                if not isinstance(entry, dict) or "checkpoint" in entry or "time" not in entry:
                    continue  # a checkpoint, or a line `verify` reports
                if key_id is not None and entry.get("key_id") != key_id:
                    continue
                if since is not None and entry["time"] < since:
                    continue
                if route is not None and not str(entry.get("route", "")).startswith(route):
                    continue
                found.append({**entry, "writer": writer})
    return sorted(found, key=lambda e: (e["time"], e["writer"], e["seq"]))
