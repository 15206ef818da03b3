"""A location fit to show: a URI without the credentials it may carry, for a metric label or a
log line (a journal or a memory on object storage may be configured as
`s3://KEY:SECRET@bucket/…` or with a token in its query)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["redact_uri"]


def redact_uri(uri: str) -> str:
    """`uri` with its user information replaced by `***`, every query value by `***` and its
    fragment dropped; a local path (no `://`) or a URI without them unchanged."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = parts.query
    if query:
        query = urlencode([(k, "***") for k, _ in parse_qsl(query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
