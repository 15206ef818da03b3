"""The key table bound to the audit chain: a key's state is trusted only if the authority's own
chain has a record of the change that made it.

The key journal is checksummed against torn writes, not signed, so a frame added by hand reads
as well as one the authority wrote. Each key change is therefore appended to the authority's
chain first (durably), with `record_sha256`, the SHA-256 of the key record it makes; the
journal entry then carries that audit record's hash (`audit`). A key whose latest journal state
has no such record (added or edited by hand, or journaled without its record) is not loaded by
the authority and is named by `verify_key_table`. The chain itself is checked by `verify`.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from models._private.core.journal import Journal
from serve._private.auth.audit import canonical
from serve._private.auth.audit_verify import Verdict, segments

__all__ = ["KEYS_JOURNAL", "chain_records", "record_digest", "unbound_keys", "verify_key_table"]

KEYS_JOURNAL = "keys"  # the key journal's folder in the authority's directory
AUTHORITY = "authority"  # the authority's writer name in the audit log


def record_digest(record: dict[str, Any]) -> str:
    """What an audit record says of the key record a change made (its journaled form)."""
    return hashlib.sha256(canonical(record)).hexdigest()


def chain_records(audit_directory: str, writer: str = AUTHORITY) -> dict[str, dict[str, Any]]:
    """The records of one writer's files (rotated ones too) by their hash (checkpoints and bad
    lines left out)."""
    found: dict[str, dict[str, Any]] = {}
    if not os.path.isdir(audit_directory):
        return found
    for path in segments(audit_directory).get(writer, []):
        with open(path, "rb") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and "hash" in entry and "checkpoint" not in entry:
                    found[entry["hash"]] = entry
    return found


def unbound_keys(entries: list[dict[str, Any]], chain: dict[str, dict[str, Any]]) -> list[str]:
    """The ids of keys whose latest journaled state no record of `chain` vouches for."""
    latest: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if "record" in entry:
            latest[entry["record"]["id"]] = entry
    bad = []
    for key_id, entry in latest.items():
        audit = chain.get(entry.get("audit", ""))
        if (
            audit is None
            or audit.get("key_id") != key_id
            or audit.get("record_sha256") != record_digest(entry["record"])
        ):
            bad.append(key_id)
    return bad


def verify_key_table(auth_directory: str, audit_directory: str) -> Verdict:
    """Checks every key in the journal under `auth_directory` against the authority's chain in
    `audit_directory` (verdict of writer "keys"; `records` counts the keys)."""
    entries = Journal(os.path.join(auth_directory, KEYS_JOURNAL), sync=False).read()
    chain = chain_records(audit_directory)
    keys = {e["record"]["id"] for e in entries if "record" in e}
    verdict = Verdict("keys", len(keys), 0)
    if bad := unbound_keys(entries, chain):
        verdict.first_bad = 1
        verdict.reason = (
            f"keys with no audit record of their latest change (added or edited outside the "
            f"authority, not honoured by it): {', '.join(sorted(bad))}"
        )
    return verdict
