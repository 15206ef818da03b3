"""`swarm up`'s key provisioning, against a fake authority and registry (the real ones run in
the demo and CLI tests): a live stored key is kept, whatever $SWARMRAY_API_KEY says."""

from types import SimpleNamespace

from cluster._private import credentials
from serve._private.auth.config import AuthConfig
from serve._private.auth.keys import hash_key


class _Remote:
    def __init__(self, fn):
        self.remote = fn


def fake_authority(made):
    live = {}

    def create(spec, actor):
        key = f"sr-key{len(made)}"
        made.append(spec["name"])
        live[hash_key(key)] = f"key_{len(made)}"
        return {"key": key, "record": {"id": live[hash_key(key)]}}

    return SimpleNamespace(
        create=_Remote(create),
        live=_Remote(live.get),
        list=_Remote(lambda: []),
    )


def test_a_live_stored_key_is_kept_even_when_the_environment_names_another(tmp_path, monkeypatch):
    made = []
    authority = fake_authority(made)
    kv = {}
    registry = SimpleNamespace(kv_get=_Remote(kv.get), kv_put=_Remote(kv.__setitem__))
    monkeypatch.setattr(credentials, "get_authority", lambda system, auth: authority)
    monkeypatch.setattr(credentials, "get", lambda value: value)
    monkeypatch.setenv("HOME", str(tmp_path))
    credentials.provision("sys", AuthConfig(), registry)
    assert made == [f"{credentials.getpass.getuser()} (swarm up)", "agents"]
    monkeypatch.setenv("SWARMRAY_API_KEY", "sr-someone-elses")
    credentials.provision("sys", AuthConfig(), registry)
    assert len(made) == 2  # the stored key and the agents' are live: nothing new
