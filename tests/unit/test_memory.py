"""HybridMemory with the real embedder, FAISS and tantivy, on small data."""

import glob
import os
import shutil

import fsspec
import numpy as np
import pytest

from cluster import MemoryInputError
from models import Embedder
from models._private.memory.hybrid import HybridMemory, MemoryConfig

TEXTS = {
    "a": "Vitamin D deficiency is linked to bone fractures in older adults.",
    "b": "Resistance training improves bone density in women.",
    "c": "Smoking slows the healing of fractures.",
    "d": "Vitamin C does not prevent the common cold.",
}


class Clock:
    def __init__(self):
        self.t = 1_000_000.0

    def __call__(self):
        return self.t


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def memory(embedder, tmp_path=None, **config):
    clock = Clock()
    cfg = MemoryConfig(path=str(tmp_path) if tmp_path else None, **config)
    return HybridMemory(["s1", "s2", "global"], cfg, embedder=embedder, clock=clock), clock


def fill(mem, ns="s1", **extra):
    mem.upsert(
        [
            {"id": i, "namespace": ns, "text": t, "metadata": {"year": 2000 + n}, **extra}
            for n, (i, t) in enumerate(TEXTS.items())
        ]
    )


def ids(hits):
    return [h.record.id for h in hits]


def test_every_mode_finds_the_matching_record_with_its_ranks(embedder):
    mem, _ = memory(embedder)
    fill(mem)
    for mode in ("dense", "lexical", "hybrid"):
        hits = mem.search("low vitamin D and broken bones", 2, mode=mode)
        assert ids(hits)[0] == "a", mode
    (top, *_) = mem.search("low vitamin D and broken bones", 2)
    assert set(top.ranks) == {"dense", "lexical"} and top.ranks["dense"] == 1


def test_dense_search_returns_exactly_the_best_records_by_inner_product(embedder):
    """The dense side keeps the first `candidates` distinct records the index returns (best
    first) and stops there; what it returns is the brute-force best, in order, with their scores."""
    mem, _ = memory(embedder, candidates=20)
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(300, embedder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    mem.upsert(
        [{"id": f"r{i}", "namespace": "s1", "text": f"record {i}"} for i in range(300)], vectors=vectors
    )
    for query in vectors[:5] + rng.normal(scale=0.5, size=(5, embedder.dim)).astype(np.float32):
        hits = mem.search(k=20, namespaces=["s1"], mode="dense", vector=query)
        expected = np.argsort(-(vectors @ query), kind="stable")[:20]
        assert ids(hits) == [f"r{i}" for i in expected]
        assert np.allclose([h.scores["dense"] for h in hits], (vectors @ query)[expected], atol=1e-5)


def test_namespaces_are_isolated(embedder):
    mem, _ = memory(embedder)
    fill(mem, "s1")
    mem.upsert([{"id": "x", "namespace": "s2", "text": "Vitamin D and fractures, another swarm's note."}])
    assert "x" not in ids(mem.search("vitamin D fractures", 10, namespaces=["s1"]))
    assert ids(mem.search("vitamin D fractures", 10, namespaces=["s2"])) == ["x"]
    assert "x" in ids(mem.search("vitamin D fractures", 10))  # no namespaces: all of this memory's


def test_metadata_filters_and_tiers(embedder):
    mem, _ = memory(embedder)
    fill(mem)
    assert set(ids(mem.search("bone", 10, filter={"year": {"$gte": 2001}}))) <= {"b", "c", "d"}
    assert ids(mem.search("bone fractures", 10, filter={"year": 2002})) == ["c"]
    mem.upsert(
        [{"id": "w", "namespace": "s1", "text": "Scratch note about bone fractures.", "tier": "working"}]
    )
    assert ids(mem.search("bone fractures", 10, tiers=["working"])) == ["w"]


def test_bad_input_is_refused_and_changes_nothing(embedder):
    mem, _ = memory(embedder, max_text_chars=100)
    fill(mem)
    before = dict(mem.records)
    bad_writes = [
        ([{"id": "e", "namespace": "s1", "text": "   "}], "records[0].text: is empty"),
        ([{"id": "e", "namespace": "s1", "text": "x" * 101}], "max_text_chars is 100"),
        ([{"id": "e", "namespace": "nowhere", "text": "ok"}], "unknown namespace 'nowhere'"),
        ([{"id": "e", "namespace": "s1", "text": "ok", "tier": "forever"}], "records[0]"),
        (
            [{"id": "e", "namespace": "s1", "text": "ok"}, {"id": "f", "namespace": "s1", "text": ""}],
            "records[1].text",
        ),
    ]
    for records, message in bad_writes:
        with pytest.raises(MemoryInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
            mem.upsert(records)
    with pytest.raises(MemoryInputError, match=r"expected shape \(1, 384\)"):
        mem.upsert([{"id": "e", "namespace": "s1", "text": "ok"}], vectors=np.zeros((1, 8)))
    assert mem.records == before
    bad_searches = [
        (dict(namespaces=["nowhere"]), "unknown namespace"),
        (dict(tiers=["forever"]), "unknown tier"),
        (dict(filter={"year": {"$near": 1}}), "unknown operator '\\$near'"),
        (dict(filter={"year": {"$in": 3}}), "needs a list"),
        (dict(filter=["year"]), "must be a mapping"),
        (dict(mode="fuzzy"), "must be dense, lexical or hybrid"),
    ]
    for kwargs, message in bad_searches:
        with pytest.raises(MemoryInputError, match=message):
            mem.search("bone", 3, **kwargs)


def test_short_term_records_expire_with_a_fake_clock(embedder):
    mem, clock = memory(embedder, short_term_ttl_s=60)
    mem.upsert(
        [
            {"id": "s", "namespace": "s1", "text": "A passing thought.", "tier": "short_term"},
            {"id": "l", "namespace": "s1", "text": "A lasting fact."},
            {"id": "t", "namespace": "s1", "text": "A fact with its own lifetime.", "ttl_s": 30},
        ]
    )
    clock.t += 31
    assert mem.sweep()["expired"] == 1 and set(mem.records) == {"s", "l"}
    clock.t += 30
    assert mem.sweep()["expired"] == 1 and set(mem.records) == {"l"}


def test_records_are_promoted_by_access_and_by_importance(embedder):
    mem, _ = memory(embedder, promote_after_accesses=2)
    mem.upsert(
        [
            {"id": "s", "namespace": "s1", "text": "Iron deficiency causes anemia.", "tier": "short_term"},
            {"id": "v", "namespace": "s1", "text": "Key result.", "tier": "working", "importance": 0.9},
        ]
    )
    assert mem.records["v"].tier == "long_term"
    mem.get(["s"])
    assert mem.sweep()["promoted"] == 0 and mem.records["s"].tier == "short_term"
    mem.search("iron anemia", 1)
    assert mem.sweep()["promoted"] == 1 and mem.records["s"].tier == "long_term"


def test_working_tier_is_lru_and_demotes_what_it_pushes_out(embedder):
    mem, _ = memory(embedder, working_capacity=2)
    for i in range(3):
        mem.upsert([{"id": f"w{i}", "namespace": "s1", "text": f"scratch {i}", "tier": "working"}])
    assert [mem.records[f"w{i}"].tier for i in range(3)] == ["short_term", "working", "working"]


def test_near_duplicates_are_consolidated_into_the_older_record(embedder):
    mem, clock = memory(embedder, consolidate_cosine=0.95)
    mem.upsert(
        [
            {
                "id": "old",
                "namespace": "s1",
                "text": "Aspirin lowers the risk of heart attack.",
                "metadata": {"a": 1},
            }
        ]
    )
    clock.t += 1
    mem.upsert(
        [
            {
                "id": "new",
                "namespace": "s1",
                "text": "Aspirin lowers the risk of heart attacks.",
                "metadata": {"b": 2},
            },
            {"id": "other", "namespace": "s1", "text": "Penguins live in Antarctica."},
        ]
    )
    assert mem.sweep()["consolidated"] == 1
    assert set(mem.records) == {"old", "other"}
    assert (
        mem.records["old"].metadata["b"] == 2
        and "heart attacks" in mem.records["old"].metadata["merged_texts"]
    )


def test_a_sweep_compares_only_what_changed_and_a_merge_logs_only_the_keeper(embedder, tmp_path, monkeypatch):
    import models._private.memory.sweeps as sweeps

    mem, clock = memory(embedder, tmp_path, consolidate_cosine=0.95)
    fill(mem)
    mem.upsert(
        [
            {"id": f"x{n}", "namespace": "s1", "text": f"Unrelated note number {n} about {w}."}
            for n, w in enumerate(["rivers", "music", "chess", "taxes", "volcanoes", "bread"])
        ]
    )
    mem.sweep()
    compared = []
    real = sweeps.near_duplicates
    monkeypatch.setattr(
        sweeps, "near_duplicates", lambda heads, c: compared.append(len(heads)) or real(heads, c)
    )
    assert mem.sweep()["consolidated"] == 0 and compared == []  # nothing new: nothing compared
    clock.t += 1
    mem.upsert([{"id": "dup", "namespace": "s1", "text": TEXTS["a"].replace("older", "elderly")}])
    logged = []
    write = mem.wal.write_now
    monkeypatch.setattr(mem.wal, "write_now", lambda *entries: logged.extend(entries) or write(*entries))
    assert mem.sweep()["consolidated"] == 1 and "dup" not in mem.records
    assert 0 < max(compared) < 10  # the new record and its near neighbours, not all ten
    upserted = [r["id"] for e in logged if e["op"] == "upsert" for r in e["records"]]
    assert upserted == ["a"]  # the record that absorbed the duplicate, not every survivor


def test_acknowledged_writes_survive_a_crash_through_the_log(embedder, tmp_path):
    mem, _ = memory(embedder, tmp_path)
    fill(mem)
    mem.delete(["b"])
    # No snapshot, no close: the process "dies" here, and its index lock dies with it.
    mem.lexical.close()
    again, _ = memory(embedder, tmp_path)
    assert set(again.records) == {"a", "c", "d"}
    for mode in ("dense", "lexical", "hybrid"):
        assert "b" not in ids(again.search("bone density training", 10, mode=mode))


def test_each_acknowledged_upsert_is_found_by_the_next_search_and_writes_share_commits(embedder):
    mem, _ = memory(embedder)
    for i, text in TEXTS.items():
        mem.upsert([{"id": i, "namespace": "s1", "text": text}])
        for mode in ("lexical", "hybrid"):
            assert i in ids(mem.search(text, 10, mode=mode)), (i, mode)
    commits = mem.lexical.commits
    for n in range(20):
        mem.upsert([{"id": f"n{n}", "namespace": "s1", "text": f"note number{n} about vitamins"}])
    assert mem.lexical.commits == commits  # twenty writes, no search: no commit yet
    assert ids(mem.search("number7", 1, mode="lexical")) == ["n7"]
    assert mem.lexical.commits == commits + 1  # one commit for the twenty


# Run in a child process: upserts acknowledged, then killed (SIGKILL) before anything commits
# the keyword index; prints how many keyword commits the upserts made (none expected).
_KILLED_AFTER_ACK = """
import os, signal, sys
from models import Embedder
from models._private.memory.hybrid import HybridMemory, MemoryConfig
mem = HybridMemory(["s1"], MemoryConfig(path=sys.argv[1]), embedder=Embedder())
mem.search("warm", 1, mode="lexical")
before = mem.lexical.commits
for n in range(10):
    mem.upsert([{"id": f"k{n}", "namespace": "s1", "text": f"killed record keyword{n}"}])
print(mem.lexical.commits - before, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_process_killed_between_the_ack_and_the_keyword_commit_loses_nothing(embedder, tmp_path):
    import subprocess
    import sys

    child = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_ACK, str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        timeout=300,
    )
    assert child.returncode == -9, child.stderr[-2000:]
    assert child.stdout.split() == ["0"]  # acknowledged, never committed to the keyword index
    again = HybridMemory(["s1"], MemoryConfig(path=str(tmp_path)), embedder=embedder)
    assert sorted(again.records) == [f"k{n}" for n in range(10)]
    for n in range(10):
        assert ids(again.search(f"keyword{n}", 1, mode="lexical")) == [f"k{n}"]
    again.close()


def test_snapshot_then_log_restore_everything_and_deletes_stay_deleted(embedder, tmp_path):
    mem, _ = memory(embedder, tmp_path, dense_kind="hnsw")
    fill(mem)
    mem.snapshot()
    mem.delete(["a"])
    mem.upsert([{"id": "e", "namespace": "s2", "text": "Deficiency of iron causes anemia."}])
    mem.lexical.close()
    again, _ = memory(embedder, tmp_path, dense_kind="hnsw")
    assert set(again.records) == {"b", "c", "d", "e"}
    assert ids(again.search("iron anemia", 1, namespaces=["s2"])) == ["e"]
    again.snapshot()  # compaction
    again.close()
    third, _ = memory(embedder, tmp_path, dense_kind="hnsw")
    for mode in ("dense", "lexical", "hybrid"):
        assert "a" not in ids(third.search("vitamin D fractures", 10, mode=mode))
    assert len(list(tmp_path.glob("snapshot-*"))) == 1


LONG = " ".join(
    [f"Filler sentence number {n} says nothing about the topic at hand." for n in range(60)]
    + ["Octopuses have three hearts and blue blood."]
)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_long_texts_are_embedded_chunk_by_chunk_through_restarts(embedder, tmp_path, kind):
    mem, _ = memory(embedder, tmp_path, dense_kind=kind, chunk_tokens=64)
    fill(mem)
    mem.upsert([{"id": "long", "namespace": "s1", "text": LONG}])
    assert len(mem.vectors["long"]) > 5, "one vector per chunk"
    assert ids(mem.search("how many hearts does an octopus have", 1, mode="dense")) == ["long"]
    whole, _ = memory(embedder, None, dense_kind=kind, chunk_tokens=None)
    fill(whole)
    whole.upsert([{"id": "long", "namespace": "s1", "text": LONG}])
    assert "long" not in ids(whole.search("how many hearts does an octopus have", 1, mode="dense")), (
        "without chunks the sentence lies past the embedder's window"
    )
    mem.snapshot()
    # Rewritten shorter: its old chunks must not answer any more, before or after a restart.
    mem.upsert([{"id": "long", "namespace": "s1", "text": "A short note on tides."}])
    assert len(mem.vectors["long"]) == 1
    mem.lexical.close()
    again, _ = memory(embedder, tmp_path, dense_kind=kind, chunk_tokens=64)
    query = "how many hearts does an octopus have"
    q, short = embedder.encode([query, "A short note on tides."])
    for m in (mem, again):
        hits = {h.record.id: h for h in m.search(query, 10, mode="dense")}
        assert hits["long"].scores["dense"] == pytest.approx(float(q @ short), abs=1e-5)
        assert ids(m.search("tides", 1, mode="dense")) == ["long"]
    again.snapshot()
    again.close()
    third, _ = memory(embedder, tmp_path, dense_kind=kind, chunk_tokens=64)
    assert ids(third.search("tides", 1, mode="dense")) == ["long"]
    assert sum(len(d) for d in third.dense.values()) == len(third.records)  # no stale chunks


def test_a_record_moved_to_another_namespace_leaves_the_first_entirely(embedder):
    mem, _ = memory(embedder, working_capacity=2)
    mem.upsert([{"id": "m", "namespace": "s1", "text": TEXTS["a"], "tier": "working"}])
    mem.upsert([{"id": "m", "namespace": "s2", "text": TEXTS["a"], "tier": "working"}])
    for mode in ("dense", "lexical", "hybrid"):
        assert ids(mem.search("vitamin D fractures", 5, namespaces=["s1"], mode=mode)) == [], mode
        assert ids(mem.search("vitamin D fractures", 5, namespaces=["s2"], mode=mode)) == ["m"], mode
    # Filling s1's working tier must not touch the record that left it.
    mem.upsert([{"id": f"w{i}", "namespace": "s1", "text": TEXTS["b"], "tier": "working"} for i in range(3)])
    assert mem.get(["m"])[0].tier == "working"


def test_a_memory_on_an_fsspec_uri_opens_on_another_node_from_the_uri_alone(embedder, tmp_path, monkeypatch):
    # fsspec's in-memory file system stands for object storage every node reaches; each
    # "node" has a local working copy of its own.
    uri = f"memory://swarmray-tests/{tmp_path.name}/mem"
    monkeypatch.setenv("SWARMRAY_CACHE", str(tmp_path / "node-a"))
    mem = HybridMemory(["s1", "s2", "global"], MemoryConfig(path=uri), embedder=embedder)
    fill(mem)
    mem.snapshot()
    mem.delete(["a"])  # after the snapshot: only in the log on the URI
    mem.upsert([{"id": "e", "namespace": "s2", "text": "Deficiency of iron causes anemia."}])
    mem.close()

    monkeypatch.setenv("SWARMRAY_CACHE", str(tmp_path / "node-b"))
    again = HybridMemory(["s1", "s2", "global"], MemoryConfig(path=uri), embedder=embedder)
    assert set(again.records) == {"b", "c", "d", "e"}
    assert ids(again.search("iron anemia", 1, namespaces=["s2"])) == ["e"]
    for mode in ("dense", "lexical", "hybrid"):
        assert "a" not in ids(again.search("vitamin D fractures", 10, mode=mode))
    again.snapshot()  # the newer snapshot replaces the older one on the URI
    fs = fsspec.filesystem("memory")
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(f"/swarmray-tests/{tmp_path.name}/mem", detail=False)]
    snapshots = [n for n in names if n.startswith("snapshot-")]
    assert len(snapshots) == 1 and snapshots[0].startswith("snapshot-000002-")


def _on_node(node, uri, embedder, monkeypatch, tmp_path):
    """The memory at `uri` opened on `node`: a local working copy of that node's own."""
    monkeypatch.setenv("SWARMRAY_CACHE", str(tmp_path / node))
    return HybridMemory(["s1", "s2", "global"], MemoryConfig(path=uri), embedder=embedder)


def test_a_memory_on_a_wiped_uri_starts_empty_whatever_the_nodes_cache_holds(embedder, tmp_path, monkeypatch):
    uri = f"memory://swarmray-tests/{tmp_path.name}/wiped"
    mem = _on_node("node-a", uri, embedder, monkeypatch, tmp_path)
    fill(mem)
    mem.snapshot()
    mem.close()
    fsspec.filesystem("memory").rm(f"/swarmray-tests/{tmp_path.name}/wiped", recursive=True)

    again = _on_node("node-a", uri, embedder, monkeypatch, tmp_path)
    assert again.records == {}, "the URI holds nothing: the node's cache must not bring records back"
    for mode in ("dense", "lexical", "hybrid"):
        assert ids(again.search("vitamin D fractures", 10, mode=mode)) == [], mode
    assert not list((tmp_path / "node-a").rglob("snapshot-*")), "the stale local copy is discarded"


def test_a_node_back_on_a_reused_uri_loads_what_the_uri_holds_not_its_own_snapshot(
    embedder, tmp_path, monkeypatch
):
    # Node A snapshots; the URI is wiped and reused by node B, which writes other records and
    # snapshots as many times: their snapshots must not share a name.
    uri = f"memory://swarmray-tests/{tmp_path.name}/reused"
    a = _on_node("node-a", uri, embedder, monkeypatch, tmp_path)
    fill(a)
    a.snapshot()
    a.close()
    fsspec.filesystem("memory").rm(f"/swarmray-tests/{tmp_path.name}/reused", recursive=True)
    b = _on_node("node-b", uri, embedder, monkeypatch, tmp_path)
    b.upsert([{"id": "e", "namespace": "s2", "text": "Deficiency of iron causes anemia."}])
    b.snapshot()
    b.close()

    again = _on_node("node-a", uri, embedder, monkeypatch, tmp_path)
    assert set(again.records) == {"e"}


def test_a_snapshot_whose_upload_failed_never_shadows_another_nodes_of_the_same_number(
    embedder, tmp_path, monkeypatch
):
    import models._private.memory.durability as durability

    uri = f"memory://swarmray-tests/{tmp_path.name}/upload"
    a = _on_node("node-a", uri, embedder, monkeypatch, tmp_path)
    fill(a)
    a.snapshot()  # uploaded: the URI's CURRENT names it
    a.delete(["a"])

    def lost_connection(local_snapshot, uri):
        raise ConnectionError("the object store went away")  # fault injected: the upload fails

    monkeypatch.setattr(durability, "push_snapshot", lost_connection)
    with pytest.raises(ConnectionError):
        a.snapshot()  # written in A's local copy, never uploaded
    monkeypatch.undo()
    a.close()

    b = _on_node("node-b", uri, embedder, monkeypatch, tmp_path)
    assert set(b.records) == {"b", "c", "d"}  # the snapshot and the log on the URI
    b.upsert([{"id": "e", "namespace": "s2", "text": "Deficiency of iron causes anemia."}])
    b.snapshot()
    b.close()

    again = _on_node("node-a", uri, embedder, monkeypatch, tmp_path)
    assert set(again.records) == {"b", "c", "d", "e"}


class Killed(BaseException):
    """The process dying where it is raised: nothing after it runs, no cleanup but the OS's."""


def test_a_memory_killed_while_its_keyword_index_was_rebuilt_reopens_and_finds_by_keyword(
    embedder, tmp_path, monkeypatch
):
    mem, _ = memory(embedder, tmp_path)
    fill(mem)
    mem.upsert([{"id": f"k{i}", "namespace": "s2", "text": f"ordinary words {i}"} for i in range(60)])
    mem.delete(["d"])  # one delete in 64: the index is not stale, so the snapshot rebuilds it
    assert mem.lexical.deleted_since_build == 1
    rmtree = shutil.rmtree

    def killed_midway(path, ignore_errors=False):  # the kill lands while an index's files go
        if "lexical-live" not in str(path):
            return rmtree(path, ignore_errors=ignore_errors)
        for part in glob.glob(os.path.join(path, "*.fieldnorm")):
            os.remove(part)
        raise Killed

    monkeypatch.setattr(shutil, "rmtree", killed_midway)
    with pytest.raises(Killed):
        mem.snapshot()  # a delete since the last build: the snapshot rebuilds the keyword index
    monkeypatch.undo()
    mem.lexical.close()
    again, _ = memory(embedder, tmp_path)
    assert "d" not in again.records and len(again.records) == 63
    assert ids(again.search("bone density training", 1, mode="lexical")) == ["b"]
    assert ids(again.search("smoking healing", 1, mode="lexical")) == ["c"]


def test_a_keyword_index_that_cannot_be_opened_is_rebuilt_from_the_records(embedder, tmp_path, caplog):
    mem, _ = memory(embedder, tmp_path)
    fill(mem)
    mem.snapshot()
    mem.upsert([{"id": "e", "namespace": "s2", "text": "Deficiency of iron causes anemia."}])
    mem.close()
    broken = list(tmp_path.glob("lexical-live/**/*.fieldnorm"))
    assert broken
    for part in broken:
        part.unlink()
    again, _ = memory(embedder, tmp_path)
    assert set(again.records) == {"a", "b", "c", "d", "e"}
    assert ids(again.search("iron anemia", 1, mode="lexical")) == ["e"]
    assert ids(again.search("bone density training", 1, mode="lexical")) == ["b"]
    again.snapshot()  # the snapshot's copy of the rebuilt index is whole too
    again.close()
    for part in tmp_path.glob("snapshot-*/lexical/*.fieldnorm"):
        part.unlink()  # and when the snapshot's copy is the broken one, the records rebuild it too
    third, _ = memory(embedder, tmp_path)
    assert ids(third.search("iron anemia", 1, mode="lexical")) == ["e"]
    assert "cannot be opened" in caplog.text
