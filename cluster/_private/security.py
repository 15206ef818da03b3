"""What `swarm keys` and `swarm audit` do: reach the system's key authority, show keys, and
verify the audit log with the authority's public key."""

from __future__ import annotations

import os
import re
import time
from datetime import datetime, timezone
from typing import Any

import httpx
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from models._private.core.errors import SwarmrayError
from models._private.core.names import authority_name, bearer
from serve._private.auth.audit_verify import Verdict, verify_directory
from serve._private.auth.key_binding import KEYS_JOURNAL, verify_key_table
from serve._private.auth.keys import PREFIX

__all__ = [
    "audit_over_http",
    "audit_url",
    "authority_of",
    "format_audit",
    "format_keys",
    "format_verdicts",
    "parse_duration",
    "parse_since",
    "verify_audit",
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in '90s', '15m', '12h', '30d' or '2w'."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not match:
        raise SwarmrayError(f"{text!r} is not a duration like 90s, 15m, 12h, 30d or 2w")
    return float(match.group(1)) * _UNITS[match.group(2)]


def authority_of(system: str) -> Any:
    """The running key authority of `system` (Ray must be connected)."""
    import ray

    try:
        return ray.get_actor(authority_name(system), namespace=system)
    except ValueError:
        raise SwarmrayError(
            f"no key authority runs for system {system!r}: turn auth on (auth: {{enabled: true}} "
            "under ai: or facts:) and run `swarm up`"
        ) from None


def format_keys(records: list[dict[str, Any]]) -> str:
    """A table of keys, never their secrets (only a hint of each)."""
    rows = [
        [
            "ID",
            "NAME",
            "KEY",
            "SCOPES",
            "MODELS",
            "NAMESPACES",
            "SWARMS",
            "TOOLS",
            "RPM",
            "TPM",
            "BUDGET",
            "STATE",
        ]
    ]
    for r in sorted(records, key=lambda r: r["created_at"]):
        state = "revoked" if r.get("revoked_at") else "live"
        rows.append(
            [
                r["id"],
                r["name"],
                f"{PREFIX}{r['hint']}…",
                ",".join(r["scopes"]),
                ",".join(r["models"]) if r.get("models") is not None else "*",
                ",".join(r["namespaces"]) if r.get("namespaces") is not None else "*",
                ",".join(r["swarms"]) if r.get("swarms") is not None else "*",
                ",".join(r["capabilities"]) if r.get("capabilities") is not None else "*",
                str(r.get("rpm") or "-"),
                str(r.get("tpm") or "-"),
                _budget(r),
                state,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _budget(record: dict[str, Any]) -> str:
    parts = []
    if record.get("budget_tokens"):
        parts.append(f"{record['budget_tokens']} tokens")
    if record.get("budget_usd"):
        parts.append(f"${record['budget_usd']:g}")
    if not parts:
        return "-"
    return " + ".join(parts) + f"/{_period(record.get('budget_period_s') or 86400.0)}"


def _period(seconds: float) -> str:
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


def verify_audit(
    system: str | None,
    public_key_pem: str | None = None,
    directory: str | None = None,
    since: float | None = None,
) -> list[Verdict]:
    """Verifies every writer's chain. Online (no `directory`), the authority gives the directory,
    its public key (unless one is given) and every writer's latest signed head (its own signed
    now), so that a chain cut short shows; offline, pass the directory and the public key
    (`swarm audit pubkey`). With `since`, each chain is checked from its last checkpoint signed
    before then."""
    import ray

    witnesses: dict[str, Any] = {}
    if directory is None:
        authority = authority_of(system)
        directory = ray.get(authority.audit_directory.remote())
        public_key_pem = public_key_pem or ray.get(authority.public_key.remote())
        witnesses = ray.get(authority.witnesses.remote())
    if public_key_pem is None:
        raise SwarmrayError("verifying a directory offline needs --pubkey (from `swarm audit pubkey`)")
    verdicts = verify_directory(directory, load_pem_public_key(public_key_pem.encode()), witnesses, since)
    auth_directory = os.path.dirname(os.path.abspath(directory))
    if os.path.isdir(os.path.join(auth_directory, KEYS_JOURNAL)):  # a copy may hold the logs only
        verdicts.append(verify_key_table(auth_directory, directory))
    return verdicts


UNSIGNED_NOTE = (
    "Records after a writer's last signed head are linked by the hash chain, but no signature "
    "covers them yet: a rewrite of them all, or a cut of them, would not show. A running writer "
    "signs its head within auth.audit_checkpoint_s (10 s by default) of a record; one that stopped "
    "sooner (a replica shut down or crashed) leaves them unsigned for good."
)


def format_verdicts(verdicts: list[Verdict]) -> str:
    """`swarm audit verify`'s report: a line per writer, then what unsigned records mean if any
    writer has some."""
    if not verdicts:
        return "no writer's log found"
    lines = []
    for v in verdicts:
        start = f" (from seq {v.skipped + 1})" if v.skipped else ""
        line = f"{v.writer}: {v.records} records{start}, {v.checkpoints} checkpoints; "
        where = f" of {v.file}" if v.file else ""  # a writer's log may be several files (rotated)
        line += "ok" if v.ok else f"BAD at line {v.first_bad}{where}: {v.reason}"
        if v.unwitnessed:
            line += f" ({v.unwitnessed} after its last signed head: chained, not yet signed)"
        lines.append(line)
    if any(v.unwitnessed for v in verdicts):
        lines.append(UNSIGNED_NOTE)
    return "\n".join(lines)


def parse_since(text: str, now: float | None = None) -> float:
    """A Unix time from '15m' (that long ago) or an ISO 8601 time ('2026-11-30T12:00:00Z')."""
    if re.fullmatch(r"\s*\d+(?:\.\d+)?\s*[smhdw]\s*", text):
        return (time.time() if now is None else now) - parse_duration(text)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SwarmrayError(f"{text!r} is neither a duration (15m, 2h) nor an ISO 8601 time") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def audit_url(system: str) -> str:
    """The …/v1 root of a service of `system` that answers /v1/audit: the AI service's, else
    the facts service's (Ray must be connected), as this process reaches it (`url_here`)."""
    from actors._private.services import AI_URL_KEY, FACTS_URL_KEY
    from cluster._private.connection import call, registry_of
    from cluster._private.endpoints import url_here

    registry = registry_of(system)
    for name in (AI_URL_KEY, FACTS_URL_KEY):
        if url := call(lambda name=name: registry.kv_get.remote(name)):
            return url_here(url)
    raise SwarmrayError(f"system {system!r} runs no service; run `swarm up`")


def audit_over_http(
    url: str,
    api_key: str | None,
    key_id: str | None = None,
    since: float | None = None,
    route: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """The page of a service's GET /v1/audit for this key (admin scope): {"data": the latest
    `limit` matching records, oldest first, "has_more": whether older ones matched too}.

    Raises:
        ServiceURLError: the key would go over plain HTTP to another machine (before sending).
    """
    from actors._private.services import error_of
    from cluster._private.endpoints import check_key_transport

    check_key_transport(url, api_key)
    params = {"key": key_id, "since": since, "route": route, "limit": limit}
    r = httpx.get(
        url.rstrip("/") + "/audit",
        params={k: v for k, v in params.items() if v is not None},
        headers=bearer(api_key),
        timeout=60,
    )
    if r.status_code >= 400:
        raise SwarmrayError(f"the service answered {r.status_code}: {error_of(r)[1]}")
    return r.json()


def format_audit(records: list[dict[str, Any]]) -> str:
    """One line a record: when, who, what, how it ended."""
    lines = []
    for e in records:
        when = datetime.fromtimestamp(e["time"], tz=timezone.utc).isoformat(timespec="milliseconds")
        if e.get("kind") == "admin":
            what = f"{e.get('action')} {e.get('key_id')} by {e.get('actor')}"
        else:
            target = e.get("target")
            target = ", ".join(target) if isinstance(target, list) else target
            code = f" {e['code']}" if e.get("code") else ""
            # A revoked or expired key by its id and state; a missing or unknown one by its state.
            key = e.get("key_id") or e.get("key_state") or "-"
            if e.get("key_id") and e.get("key_state"):
                key += f" ({e['key_state']})"
            what = (
                f"{e.get('method')} {e.get('route')}{f' [{target}]' if target else ''} -> {e.get('status')}"
            )
            what += f"{code} key={key} id={e.get('request_id')}"
        lines.append(f"{when}  {e['writer']}#{e['seq']}  {e.get('kind')}  {what}")
    return "\n".join(lines)
