"""API keys: secret never stored, scopes and object limits checked."""

import pytest
from pydantic import ValidationError

from models._private.core.names import bearer
from serve._private.auth.keys import PREFIX, SCOPES, KeyRecord, denial, hash_key, hint_of, new_key


def record(**kw):
    key = kw.pop("key", new_key())
    base = dict(id="k1", name="ci", hash=hash_key(key), hint=key[3:11], scopes=["ai:invoke"], created_at=0.0)
    return KeyRecord(**{**base, **kw}), key


def test_keys_are_recognisable_random_and_stored_as_hashes_only():
    a, b = new_key(), new_key()
    assert a.startswith(PREFIX) and len(a) == len(PREFIX) + 43 and a != b
    rec, _ = record(key=a)
    assert rec.matches(a) and not rec.matches(b)
    assert a not in rec.model_dump_json()  # the secret is nowhere in what is stored
    assert hint_of(a) == a[3:11] and bearer(a) == {"Authorization": f"Bearer {a}"} and bearer(None) == {}


def test_scopes_models_and_namespaces_are_each_enforced():
    rec, _ = record(scopes=["ai:invoke", "facts:read"], models=["smollm2"], namespaces=["default"])
    assert denial(rec, "ai:invoke", model="smollm2") is None
    assert denial(rec, "ai:embed") == "this key lacks the scope ai:embed"
    assert denial(rec, None, model="gpt-4o") == "this key may not use the model 'gpt-4o'"
    assert denial(rec, "ai:invoke", model="gpt-4o") == "this key may not use the model 'gpt-4o'"
    assert denial(rec, "facts:read", namespace="demo") == "this key may not use the namespace 'demo'"
    admin, _ = record(scopes=["admin"])
    assert all(denial(admin, s, model="any", namespace="any") is None for s in SCOPES)
    # Lists bind every key: an admin of one namespace (a tenant's admin) may not use another.
    tenant, _ = record(scopes=["admin"], namespaces=["team-a"])
    assert denial(tenant, "facts:write", namespace="team-a") is None and denial(tenant, "usage:read") is None
    assert denial(tenant, "facts:read", namespace="team-b") == "this key may not use the namespace 'team-b'"


def test_revoked_and_expired_keys_are_not_live():
    rec, _ = record(expires_at=100.0)
    assert rec.live(99.0) and not rec.live(100.0)
    assert not rec.model_copy(update={"revoked_at": 50.0}).live(10.0)


def test_an_unknown_scope_is_refused_by_name():
    with pytest.raises(ValidationError, match="scopes"):
        record(scopes=["ai:everything"])


def test_durations_and_the_key_table_for_the_cli():
    from cluster._private.security import format_keys, parse_duration
    from models._private.core.errors import SwarmrayError

    assert (
        parse_duration("30d") == 30 * 86400 and parse_duration("90s") == 90 and parse_duration("1.5h") == 5400
    )
    with pytest.raises(SwarmrayError, match="not a duration"):
        parse_duration("soon")
    rec, key = record(namespaces=["open"], rpm=5)
    table = format_keys([rec.model_dump(exclude={"hash"})])
    assert key not in table and f"sr-{key[3:11]}…" in table and "open" in table and "live" in table
    budgeted, _ = record(budget_tokens=1000, budget_usd=2.5, budget_period_s=30 * 86400)
    assert "1000 tokens + $2.5/30d" in format_keys([budgeted.model_dump(exclude={"hash"})])
    mcp, _ = record(scopes=["mcp:call"], swarms=["text", "math*"], capabilities=["text.*"])
    header, row = format_keys([mcp.model_dump(exclude={"hash"})]).splitlines()
    assert header.split()[6:8] == ["SWARMS", "TOOLS"] and row.split()[6:8] == ["text,math*", "text.*"]


def test_the_signing_key_is_made_once_and_readable_by_its_owner_only(tmp_path):
    import os
    import stat

    from serve._private.auth.authority import SIGNING_KEY, load_signing_key

    first, again = load_signing_key(str(tmp_path / "auth")), load_signing_key(str(tmp_path / "auth"))
    assert first.private_bytes_raw() == again.private_bytes_raw()
    assert stat.S_IMODE(os.stat(tmp_path / "auth" / SIGNING_KEY).st_mode) == 0o600


def test_a_key_may_name_only_models_the_systems_ai_service_serves(tmp_path):
    from models._private.core.errors import ModelNotFoundError
    from serve._private.ai.config import AIServiceConfig
    from serve._private.auth.authority import KeyAuthority
    from serve._private.auth.config import AuthConfig

    ai = AIServiceConfig(
        providers={"p": {"base_url": "http://x", "model": "m", "aliases": ["fast"]}},
        models={"local": {"source": "/weights", "fallbacks": ["p"]}},
    )
    assert ai.model_names() == ["all-MiniLM-L6-v2", "fast", "local", "p"]  # and the embeddings model
    config = AuthConfig(path=str(tmp_path)).model_dump()
    authority = KeyAuthority(str(tmp_path / "auth"), config)
    # Before an AI service has said what it serves, a model list is taken as given.
    authority.create({"name": "before", "scopes": ["ai:invoke"], "models": ["any"]})
    authority.set_served_models(ai.model_names())
    with pytest.raises(ModelNotFoundError) as refused:
        authority.create({"name": "x", "scopes": ["ai:invoke"], "models": ["fast", "other-model"]})
    assert refused.value.model == "other-model"
    assert str(refused.value) == (
        "the model 'other-model' does not exist; served models: ['all-MiniLM-L6-v2', 'fast', 'local', 'p']"
    )
    assert [r["name"] for r in authority.list()] == ["before"]  # nothing made
    made = authority.create({"name": "ok", "scopes": ["ai:invoke"], "models": ["fast", "all-MiniLM-L6-v2"]})
    assert made["record"]["models"] == ["fast", "all-MiniLM-L6-v2"]
    # Namespaces stay open: a facts namespace is made by its first write.
    authority.create({"name": "ns", "scopes": ["facts:write"], "namespaces": ["not-yet"]})
    again = KeyAuthority(str(tmp_path / "auth"), config)  # restarted by Ray: it still knows
    with pytest.raises(ModelNotFoundError):
        again.create({"name": "y", "scopes": ["ai:invoke"], "models": ["other-model"]})
