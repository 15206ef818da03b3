"""Data at rest is its owner's alone: every store swarmray makes on a local disk (journals, the
facts' SQLite files, audit logs, the key authority's files, memory logs and snapshots) is made
of 0600 files in 0700 directories, however permissive the process's umask."""

import os
import stat
from pathlib import Path

import pytest

from models._private.core.journal import Journal


@pytest.fixture(autouse=True)
def _usual_umask():
    """The common 022: files would be 0644 and directories 0755 unless made private."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def assert_private(root) -> None:
    """`root` and every directory below it 0700, every file 0600."""
    assert mode(root) == 0o700, root
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            assert mode(os.path.join(folder, d)) == 0o700, os.path.join(folder, d)
        for f in files:
            assert mode(os.path.join(folder, f)) == 0o600, os.path.join(folder, f)


def assert_parts_private(root) -> None:
    """A memory's folder: 0700, and its log, snapshots (their tantivy copy too) and CURRENT
    private; tantivy's live index makes its files its own way, inside that 0700 folder."""
    assert mode(root) == 0o700, root
    assert any(p.name.startswith("snapshot-") for p in root.iterdir())
    for part in root.iterdir():
        if part.is_dir() and part.name != "lexical-live":
            assert_private(part)
        elif part.is_file():
            assert mode(part) == 0o600, part


def test_a_journal_its_directories_and_its_compacted_generation_are_private(tmp_path):
    root = tmp_path / "journal" / "sys" / "queen"
    journal = Journal(str(root))
    journal.write_now({"task": "a"})
    assert_private(tmp_path / "journal")
    journal.reset()  # a compaction: a new generation, written whole
    journal.write_now({"task": "b"})
    assert_private(tmp_path / "journal")


def test_a_journal_an_older_version_left_readable_is_narrowed_when_opened(tmp_path):
    root = tmp_path / "queen"
    Journal(str(root)).write_now({"task": "a"})
    os.chmod(root, 0o755)
    for f in root.iterdir():
        os.chmod(f, 0o644)
    again = Journal(str(root))
    assert again.read() == [{"task": "a"}]
    again.write_now({"task": "b"})
    assert_private(root)


def test_the_facts_sqlite_file_and_its_wal_and_shm_are_private(tmp_path):
    from models._private.facts.schema import DocumentIn
    from models._private.facts.store.core import FactStore

    store = FactStore(str(tmp_path / "facts" / "default" / "facts.db"))
    store.add_document(DocumentIn(id="d1", text="Ada Lovelace wrote the first program."))
    names = sorted(p.name for p in (tmp_path / "facts" / "default").iterdir())
    assert names == ["facts.db", "facts.db-shm", "facts.db-wal"]
    assert_private(tmp_path / "facts")
    store.close()


def test_audit_logs_are_private(tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from serve._private.auth.audit import AuditLog

    log = AuditLog(str(tmp_path / "audit"), "gw-1", Ed25519PrivateKey.generate())
    log.append({"kind": "request", "route": "/v1/models", "status": 200}, durable=True)
    log.close()
    assert (tmp_path / "audit" / "gw-1.jsonl").stat().st_size > 0
    assert_private(tmp_path / "audit")


def test_the_key_authoritys_journals_keys_heads_and_audit_are_private(tmp_path):
    from serve._private.auth.audit import signed_head
    from serve._private.auth.authority import KeyAuthority
    from serve._private.auth.config import AuthConfig

    authority = KeyAuthority(str(tmp_path / "auth"), AuthConfig(path=str(tmp_path / "auth")).model_dump())
    authority.create({"name": "ci", "scopes": ["ai:invoke"]})
    authority.set_served_models(["m"])
    authority.witnessed(signed_head(authority._signing, "gw-1", 1, "0" * 64, 1.0))
    names = {p.name for p in (tmp_path / "auth").iterdir()}
    assert {"signing.key", "keys", "usage", "audit", "heads.json", "models.json"} <= names
    assert_private(tmp_path / "auth")


def test_a_memorys_log_and_snapshots_are_private(tmp_path):
    from models import Embedder
    from models._private.memory.hybrid import HybridMemory, MemoryConfig

    path = tmp_path / "memory" / "notes"
    mem = HybridMemory(["s1"], MemoryConfig(path=str(path)), embedder=Embedder())
    mem.upsert([{"id": "a", "namespace": "s1", "text": "Ray restarts detached actors."}])
    mem.snapshot()
    mem.upsert([{"id": "b", "namespace": "s1", "text": "Tantivy indexes text."}])
    assert mode(tmp_path / "memory") == 0o700
    assert_parts_private(path)
    mem.close()


def test_a_memory_on_a_uri_keeps_its_local_working_copy_private(tmp_path, monkeypatch):
    from models import Embedder
    from models._private.memory.hybrid import HybridMemory, MemoryConfig
    from models._private.memory.persistence import local_copy

    uri = f"memory://swarmray-tests/{tmp_path.name}/mem"
    embedder = Embedder()
    monkeypatch.setenv("SWARMRAY_CACHE", str(tmp_path / "node-a"))
    mem = HybridMemory(["s1"], MemoryConfig(path=uri), embedder=embedder)
    mem.upsert([{"id": "a", "namespace": "s1", "text": "Ray restarts detached actors."}])
    mem.snapshot()
    mem.close()
    monkeypatch.setenv("SWARMRAY_CACHE", str(tmp_path / "node-b"))  # another node downloads it
    again = HybridMemory(["s1"], MemoryConfig(path=uri), embedder=embedder)
    assert set(again.records) == {"a"}
    assert mode(tmp_path / "node-b") == 0o700
    assert_parts_private(Path(local_copy(uri)))
    again.close()
