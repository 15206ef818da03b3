"""What a limited key or a scrape may not learn (issue 26, item 17): another tenant's namespace
in an audit record about several, and the credentials in a journal's URI."""

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from models._private.core.journal import Journal
from models._private.core.uris import redact_uri
from serve._private.auth.audit import AuditLog
from tests.unit.test_audit import Clock, _guarded_app


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


def test_a_namespace_limited_admin_reads_a_search_of_several_namespaces_narrowed_to_its_own(tmp_path, key):
    from fastapi.testclient import TestClient

    from serve._private.auth import key_table
    from serve._private.auth.audit_route import install_audit_route

    keys = {
        "sr-tenant": {"id": "key_t", "name": "t", "scopes": ["admin"], "namespaces": ["open"]},
        "sr-admin": {"id": "key_a", "name": "a", "scopes": ["admin"]},
    }
    app, guard = _guarded_app(tmp_path, key, keys)
    install_audit_route(app, "unit-ai")
    facts = AuditLog(str(tmp_path / "audit"), "facts-1", key, clock=Clock())
    search = {"kind": "request", "key_id": "key_a", "method": "POST", "route": "/v1/search", "status": 200}
    facts.append({**search, "target": ["open", "secret"]}, True)
    facts.append({**search, "target": ["secret", "other"]}, True)  # about none of the tenant's
    facts.close()
    try:
        with TestClient(app) as client:
            tenant = client.get("/v1/audit", headers={"Authorization": "Bearer sr-tenant"})
            admin = client.get("/v1/audit", headers={"Authorization": "Bearer sr-admin"})
    finally:
        key_table._TABLES.pop("unit-ai", None)
        guard.audit.close()
    searches = [e for e in tenant.json()["data"] if e["route"] == "/v1/search"]
    assert [e["target"] for e in searches] == [["open"]]
    assert "secret" not in tenant.text and "other" not in tenant.text
    whole = [e["target"] for e in admin.json()["data"] if e["route"] == "/v1/search"]
    assert whole == [["open", "secret"], ["secret", "other"]]  # an admin without lists reads them whole


def test_a_uri_loses_its_credentials_before_it_becomes_a_label_or_a_log_line():
    assert redact_uri("s3://AKIAX:s3cr3t@bucket/journal/sys") == "s3://***@bucket/journal/sys"
    assert redact_uri("gs://bucket/j?token=abc&region=eu#frag") == "gs://bucket/j?token=***&region=***"
    assert redact_uri("https://user@host:9000/j") == "https://***@host:9000/j"
    for plain in (
        "/home/u/.swarmray/journal/sys/_registry",
        "~/.swarmray/journal",
        "file:///tmp/j",
        "s3://b/j",
    ):
        assert redact_uri(plain) == plain


def test_a_journal_on_a_uri_with_credentials_labels_its_metrics_without_them():
    journal = Journal("memory://AKIAX:s3cr3t@bucket/j?token=abc", system="sys")
    assert journal.uri == "memory://AKIAX:s3cr3t@bucket/j?token=abc"  # it still writes there
    labels = json.dumps(journal._tags)  # the tags every journal metric is recorded with
    assert "s3cr3t" not in labels and "abc" not in labels and "AKIAX" not in labels
    assert journal._tags == {"system": "sys", "journal": "memory://***@bucket/j?token=***"}


def test_a_refused_up_names_a_changed_uri_without_its_credentials():
    from cluster._private.config import config_changes

    old = {"swarms": {"s": {"journal": {"uri": "s3://AKIAX:s3cr3t@bucket/j"}}}}
    new = {"swarms": {"s": {"journal": {"uri": "s3://AKIAX:s3cr3t@bucket/k"}}}}
    assert config_changes(old, new) == ['swarms.s.journal.uri: "s3://***@bucket/j" -> "s3://***@bucket/k"']
