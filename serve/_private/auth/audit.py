"""A tamper-evident audit log: one SHA-256 hash chain per writer, with Ed25519-signed checkpoints.

Each writer (a gateway replica, the key authority) appends to a file of its own,
`<directory>/<writer>.jsonl`, so that appending never waits on another process. A line is either
a record or a checkpoint, as JSON:

- a record: `{"seq": n, "time": t, "prev": <hash of record n-1>, ...fields, "hash": h}`, where
  `h` is the SHA-256 of the record's canonical JSON without `hash` (sorted keys, no spaces), so
  it covers the sequence number, the previous hash and every field. The first record's `prev` is
  64 zeros.
- a checkpoint: `{"checkpoint": {"writer", "seq", "head", "time"}, "signature": hex}`, the
  Ed25519 signature of the checkpoint's canonical JSON. One is written every `checkpoint_every`
  records or `checkpoint_s` seconds (whichever first), and on close.

`audit_verify.verify` re-hashes every record and checks the sequence, the links and each checkpoint's
signature and head. An edited, deleted, reordered or inserted record breaks the chain where it
happened; a checkpoint signed with another key fails its signature. A tail cut off after the
last checkpoint leaves a shorter, valid chain; it is found against a head signed elsewhere (a
`witness`): the key authority keeps the latest checkpoint of every writer (replicas send theirs,
and sign their head every `checkpoint_s` while records arrive) and signs its own head on demand,
and `swarm audit verify` checks every file against them.

Durability: `append(..., durable=True)` returns after the line is fsync'ed (admin and write
actions); other appends are group-committed: fsync'ed by the first append, `flush` or
checkpoint `commit_window_s` after them. The owner calls `flush` every `commit_window_s`, so a
crash loses at most that window of inference records.

Bounds: refusals go through `refused`, which records `refusals_per_window` of them whole per
`refusal_window_s` and counts the rest (by status, code and key) in one `refusals_unrecorded`
record when the window ends. Past `rotate_bytes`, the file is renamed `<writer>.jsonl.<last
seq>` at a checkpoint and the chain goes on in a new `<writer>.jsonl` that starts with that
checkpoint; `verify` walks a writer's files in order (`segments`), and checks the oldest kept
from its first checkpoint when older ones were archived away.

Failures: a write or fsync that fails (a full disk) raises `AuditUnavailableError`, losing
what was not fsync'ed; each later call first reopens the file on what it really holds and
writes an `audit_gap` record counting the records lost (`unrecorded`), then goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from models._private.core.errors import AuditUnavailableError
from models._private.core.private_files import open_private, private_dir

__all__ = ["AuditLog", "canonical", "record_hash", "signed_by", "signed_head"]

GENESIS = "0" * 64


def canonical(obj: dict[str, Any]) -> bytes:
    """The one byte form a record or checkpoint is hashed and signed in."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def signed_head(key: Ed25519PrivateKey, writer: str, seq: int, head: str, at: float) -> dict[str, Any]:
    """A checkpoint: the writer's sequence number and head hash at time `at`, signed."""
    body = {"writer": writer, "seq": seq, "head": head, "time": at}
    return {"checkpoint": body, "signature": key.sign(canonical(body)).hex()}


def signed_by(public_key: Ed25519PublicKey, checkpoint: dict[str, Any]) -> bool:
    """Whether a checkpoint's signature is `public_key`'s over its body."""
    try:
        public_key.verify(
            bytes.fromhex(checkpoint.get("signature", "")), canonical(checkpoint.get("checkpoint"))
        )
    except (InvalidSignature, ValueError, TypeError, AttributeError):
        return False
    return True


class AuditLog:
    """The append side of one writer's chain.

    Args:
        directory: Where the writer's file lives (made if missing).
        writer: The writer's name; its file is `<writer>.jsonl`.
        key: The Ed25519 key checkpoints are signed with.
        checkpoint_every: Records between checkpoints.
        checkpoint_s: Seconds between checkpoints while records arrive.
        commit_window_s: Longest a record that was not asked to be durable waits for its fsync.
        refusals_per_window: Refusals (`refused`) recorded whole per window; the rest are
            counted, and the window's counts written as one record when it ends.
        refusal_window_s: The length of that window.
        rotate_bytes: Size past which the file is closed at a checkpoint and renamed
            `<writer>.jsonl.<its last seq>`; the new file starts with that checkpoint.
    """

    def __init__(
        self,
        directory: str,
        writer: str,
        key: Ed25519PrivateKey,
        checkpoint_every: int = 1000,
        checkpoint_s: float = 10.0,
        commit_window_s: float = 0.05,
        clock: Callable[[], float] = time.time,
        refusals_per_window: int = 100,
        refusal_window_s: float = 60.0,
        rotate_bytes: int = 64 * 2**20,
    ):
        private_dir(directory)
        self.path = os.path.join(directory, f"{writer}.jsonl")
        self.writer, self._key, self._clock = writer, key, clock
        self.checkpoint_every, self.checkpoint_s = checkpoint_every, checkpoint_s
        self.commit_window_s = commit_window_s
        self.refusals_per_window, self.refusal_window_s = refusals_per_window, refusal_window_s
        self.rotate_bytes = rotate_bytes
        self._lock = threading.Lock()
        self._settle_rotation()
        self.seq, self.head = self._recover()
        self._rotated_seq = self.seq
        self._since_checkpoint = 0
        self._last_checkpoint = clock()
        self._unsynced_since: float | None = None
        self._unsynced = 0  # records written since the last fsync
        self.last_checkpoint: dict[str, Any] | None = None  # the latest one written
        self.error: OSError | None = None  # set while the file cannot be written
        self.unrecorded = 0  # records lost since the chain last said so (an `audit_gap` record)
        self._window = (clock(), 0, {})  # refusals: its start, recorded whole, counts of the rest
        self._file = os.fdopen(open_private(self.path, os.O_WRONLY | os.O_APPEND), "ab")  # held until close
        self._size = self._file.tell()

    def _settle_rotation(self) -> None:
        # A rotation writes `.new` (the next file, starting with a checkpoint), renames the full
        # file, then renames `.new` in place: a crash between the two renames leaves `.new`.
        fresh = self.path + ".new"
        if os.path.exists(fresh):
            if os.path.lexists(self.path):
                os.remove(fresh)  # the rotation had not begun renaming
            else:
                os.replace(fresh, self.path)

    def _recover(self) -> tuple[int, str]:
        """The chain's last sequence number and hash; a line torn by a crash is cut off."""
        if not os.path.exists(self.path) or not os.path.getsize(self.path):
            return 0, GENESIS
        seq, head, good = 0, GENESIS, 0
        with open(self.path, "rb") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    break  # torn: written in part before a crash
                if not line.endswith(b"\n"):
                    break
                good += len(line)
                if "checkpoint" in entry:  # a rotated file starts with one: the head it goes on from
                    seq, head = entry["checkpoint"]["seq"], entry["checkpoint"]["head"]
                else:
                    seq, head = entry["seq"], entry["hash"]
        if good < os.path.getsize(self.path):
            os.truncate(self.path, good)
        return seq, head

    def append(self, fields: dict[str, Any], durable: bool = False) -> dict[str, Any]:
        """Adds a record of `fields` (JSON values; no `seq`, `time`, `prev` or `hash`) and
        returns it. With `durable`, returns only once it is on disk.

        Raises:
            AuditUnavailableError: the file cannot be written (the record is lost, and counted
                in the `audit_gap` record written once it can be again).
        """
        with self._lock:
            return self._guarded(lambda now: self._append(fields, durable, now), records=1)

    def refused(self, fields: dict[str, Any]) -> dict[str, Any] | None:
        """Adds a refusal's record while the window has room for it (None: counted instead, by
        status, code and key, in the window's `refusals_unrecorded` record): a flood of
        requests without a key writes a bounded log."""
        with self._lock:

            def sample(now: float) -> dict[str, Any] | None:
                self._roll(now)
                start, taken, counts = self._window
                if taken < self.refusals_per_window:
                    self._window = (start, taken + 1, counts)
                    return self._append(fields, False, now)
                which = (fields.get("status"), fields.get("code"), fields.get("key_id"))
                counts[which] = counts.get(which, 0) + 1
                return None

            return self._guarded(sample, records=1)

    def flush(self) -> None:
        """Makes every record appended so far durable."""
        with self._lock:
            self._guarded(lambda now: (self._roll(now), self._sync()))

    def checkpoint(self) -> dict[str, Any]:
        """Signs the current head now (and makes the log durable up to it)."""
        with self._lock:
            return self._guarded(self._checkpoint)

    def checkpoint_if_new(self) -> dict[str, Any] | None:
        """Signs the head if records came after the last checkpoint; returns the latest one."""
        with self._lock:
            if self._since_checkpoint:
                self._guarded(self._checkpoint)
            return self.last_checkpoint

    def recover(self) -> bool:
        """Whether the file can be written (again): after a failure, reopens it and writes the
        `audit_gap` record of what was lost; a write that needs its record asks first."""
        with self._lock:
            try:
                self._guarded(lambda now: None)
            except AuditUnavailableError:
                return False
            return True

    def close(self) -> None:
        with self._lock:
            try:
                self._guarded(lambda now: self._roll(now, ended=True))
                if self._since_checkpoint:
                    self._guarded(self._checkpoint)
            finally:
                try:
                    self._file.close()
                except OSError:
                    pass  # what it held is counted in `unrecorded`, and logged by its owner

    def _guarded(self, action: Callable[[float], Any], records: int = 0) -> Any:
        # Runs `action` (which adds `records` records) on a writable file: after a failure, first
        # reopens the file on what it really holds and says in the chain what was lost. A
        # failure loses what was not fsync'ed.
        now = self._clock()
        try:
            if self.error is not None:
                self._reopen(now)
        except OSError as e:
            self._unsynced, self.error = 0, e
            self.unrecorded += records
            raise AuditUnavailableError(self.path, self.unrecorded, repr(e)) from e
        try:
            return action(now)
        except OSError as e:
            self.unrecorded += self._unsynced  # the action's record among them
            self._unsynced, self.error = 0, e
            raise AuditUnavailableError(self.path, self.unrecorded, repr(e)) from e

    def _reopen(self, now: float) -> None:
        try:
            self._file.close()  # flushing what it holds fails again; the file is closed anyway
        except OSError:
            pass
        self._settle_rotation()
        self.seq, self.head = self._recover()
        self._file = os.fdopen(open_private(self.path, os.O_WRONLY | os.O_APPEND), "ab")  # held until close
        self._size, self._unsynced, self._unsynced_since = self._file.tell(), 0, None
        self._append(
            {"kind": "audit_gap", "unrecorded": self.unrecorded, "error": repr(self.error)}, True, now
        )
        self.error, self.unrecorded = None, 0

    def _append(self, fields: dict[str, Any], durable: bool, now: float) -> dict[str, Any]:
        record = {**fields, "seq": self.seq + 1, "time": now, "prev": self.head}
        record["hash"] = record_hash(record)
        self._unsynced += 1  # before the write, which may fail
        self._write(record)
        self.seq, self.head = record["seq"], record["hash"]
        self._since_checkpoint += 1
        if (
            self._since_checkpoint >= self.checkpoint_every
            or now - self._last_checkpoint >= self.checkpoint_s
            or self._size >= self.rotate_bytes
        ):
            self._checkpoint(now)
        elif durable or (
            self._unsynced_since is not None and now - self._unsynced_since >= self.commit_window_s
        ):
            self._sync()
        elif self._unsynced_since is None:
            self._unsynced_since = now
        return record

    def _roll(self, now: float, ended: bool = False) -> None:
        # Ends the refusals' window once it is over, writing the counts of those not recorded.
        start, _, counts = self._window
        if not ended and now - start < self.refusal_window_s:
            return
        self._window = (now, 0, {})
        if counts:
            rows = [
                {"status": status, "code": code, "key_id": key_id, "count": n}
                for (status, code, key_id), n in sorted(counts.items(), key=lambda c: (-c[1], str(c[0])))
            ]
            fields = {"kind": "refusals_unrecorded", "from": start, "to": now}
            self._append({**fields, "count": sum(counts.values()), "counts": rows}, False, now)

    def _checkpoint(self, now: float) -> dict[str, Any]:
        line = signed_head(self._key, self.writer, self.seq, self.head, now)
        self._write(line)
        self._sync()
        self._since_checkpoint, self._last_checkpoint = 0, now
        self.last_checkpoint = line
        if self._size >= self.rotate_bytes and self.seq > self._rotated_seq:
            self._rotate(line)
        return line

    def _rotate(self, checkpoint: dict[str, Any]) -> None:
        fresh, first = self.path + ".new", canonical(checkpoint) + b"\n"
        with os.fdopen(open_private(fresh, os.O_WRONLY | os.O_TRUNC), "wb") as f:
            f.write(first)
            f.flush()
            os.fsync(f.fileno())
        self._file.close()
        os.rename(self.path, f"{self.path}.{self.seq:012d}")
        os.replace(fresh, self.path)
        directory = os.open(os.path.dirname(self.path), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self._file = os.fdopen(open_private(self.path, os.O_WRONLY | os.O_APPEND), "ab")  # held until close
        self._size, self._rotated_seq = len(first), self.seq

    def _write(self, entry: dict[str, Any]) -> None:
        data = canonical(entry) + b"\n"
        self._file.write(data)
        self._size += len(data)

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._unsynced_since, self._unsynced = None, 0
