"""GET /v1/audit on both services: the audit trail read over HTTP, by an admin key, showing a
key whose models or namespaces are listed only the records about those."""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.

import asyncio
import os
from typing import Any

from fastapi import FastAPI, Query, Request

from serve._private.auth.audit_verify import read_records
from serve._private.auth.key_table import key_of, key_table_of
from serve._private.auth.keys import KeyRecord, denial
from serve._private.http_errors import error_response

__all__ = ["MAX_AUDIT_PAGE", "install_audit_route", "narrowed", "visible"]

MAX_AUDIT_PAGE = 1000  # records one answer holds at most


def visible(record: KeyRecord | None, entry: dict[str, Any]) -> bool:
    """Whether a key may read an audit record. A key with no lists reads all. A key with a
    namespace list reads the facts service's records about one of its namespaces, one with a
    model list the AI service's about one of its models; neither reads key changes or listings,
    which name neither. A list the key does not have does not narrow (a key with only a
    namespace list reads every AI record, as it may use every model)."""
    if record is None or not record.limited:
        return True
    target = entry.get("target")
    if target is None:
        return False
    kind = "namespace" if entry.get("writer", "").startswith("facts") else "model"
    targets = target if isinstance(target, list) else [target]  # a search of several
    return any(denial(record, None, **{kind: t}) is None for t in targets)


def narrowed(record: KeyRecord | None, entry: dict[str, Any]) -> dict[str, Any]:
    """A visible record as `record` may read it: one about several namespaces (or models) names
    only those on the key's list, so that a tenant's admin never learns another tenant's names."""
    target = entry.get("target")
    if record is None or not record.limited or not isinstance(target, list):
        return entry
    kind = "namespace" if entry.get("writer", "").startswith("facts") else "model"
    return {**entry, "target": [t for t in target if denial(record, None, **{kind: t}) is None]}


def install_audit_route(app: FastAPI, service: str) -> None:
    """Adds GET /v1/audit to `service`'s app (the middleware's rule gives it scope admin)."""

    @app.get("/v1/audit")
    async def read_audit(
        request: Request,
        key: str | None = Query(None, max_length=64, description="Only this key id's records."),
        since: float | None = Query(None, description="Only records at or after this Unix time."),
        route: str | None = Query(None, max_length=512, description="Only routes that start so."),
        limit: int = Query(100, ge=1, le=MAX_AUDIT_PAGE, description="The latest this many records."),
    ) -> Any:
        table = key_table_of(service)
        if table is None:
            message = "auth is off for this service, so it keeps no audit trail"
            return error_response(404, message, "invalid_request_error", None, "no_audit_trail", request)
        await table.ready()
        directory = os.path.dirname(table.audit.path)
        found = await asyncio.to_thread(read_records, directory, key, since, route)
        viewer = key_of(request)
        found = [narrowed(viewer, e) for e in found if visible(viewer, e)]
        return {"object": "list", "data": found[-limit:], "has_more": len(found) > limit}
