"""MemoryStore actors: a swarm's memory and the global one, used by agents through tasks."""

import pytest
import ray

from cluster import PayloadError, load_config
from cluster._private.demo import DEMO
from tests.conftest import running_system
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def client(head, tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    config = load_config(
        {
            "namespace": "memory-tests",
            "global_memory": {"memory": {"path": str(root / "global")}},
            "swarms": {
                "storage": {
                    "memory": {"namespaces": ["storage", DEMO], "memory": {"path": str(root / "storage")}},
                    "pools": {"mem": {"agent": {"class": "actors:MemoryAgent", "max_concurrent_tasks": 8}}},
                }
            },
        }
    )
    with running_system(config) as c:
        yield c


def test_agents_store_and_search_the_swarm_memory(client):
    stored = client.run(
        "memory.store", {"id": "n1", "text": "Vitamin D deficiency raises fracture risk."}, swarm="storage"
    )
    assert stored.ok and stored.output == {"id": "n1"}
    hits = client.run("memory.search", {"query": "low vitamin D and broken bones", "k": 3}, swarm="storage")
    assert hits.ok and hits.output[0]["id"] == "n1" and set(hits.output[0]["ranks"]) == {"dense", "lexical"}


def test_the_demos_notes_stay_out_of_searches_that_do_not_name_their_namespace(client):
    note = {"id": "d1", "text": "Pelicans fly over the harbour at dawn.", "namespace": DEMO}
    assert client.run("memory.store", note, swarm="storage").ok
    query = {"query": "pelicans over the harbour", "k": 5}
    mine = client.run("memory.search", query, swarm="storage").output
    demo = client.run("memory.search", {**query, "namespaces": [DEMO]}, swarm="storage").output
    assert "d1" not in [h["id"] for h in mine]
    assert [h["id"] for h in demo] == ["d1"] and demo[0]["scores"]["lexical"] > 0  # raw BM25 too


def test_swarm_and_global_memories_are_separate(client):
    client.run(
        "memory.store",
        {"id": "g1", "text": "Shared fact: water boils at 100 C at sea level.", "scope": "global"},
        swarm="storage",
    )
    only_swarm = client.run("memory.search", {"query": "water boils", "k": 5}, swarm="storage").output
    only_global = client.run(
        "memory.search", {"query": "water boils", "k": 5, "scope": "global"}, swarm="storage"
    ).output
    assert "g1" not in [h["id"] for h in only_swarm]
    assert [h["id"] for h in only_global] == ["g1"]
    both = client.run(
        "memory.search", {"query": "water boils", "k": 5, "scope": "both"}, swarm="storage"
    ).output
    assert "g1" in [h["id"] for h in both]


def test_acknowledged_write_survives_killing_the_store(client):
    assert client.run(
        "memory.store", {"id": "k1", "text": "Written right before the crash."}, swarm="storage"
    ).ok
    store = ray.get_actor("memory:storage", namespace="memory-tests")
    ray.kill(store, no_restart=False)  # Ray restarts it; it replays its log
    records = wait_until(lambda: ray.get(store.get.remote(["k1"])), timeout_s=60, what="the store back")
    assert [r["id"] for r in records] == ["k1"]


def test_bad_input_is_refused_at_submit_or_fails_once_with_a_clear_error(client):
    with pytest.raises(PayloadError, match="text: String should have at least 1 character"):
        client.submit("memory.store", {"id": "e1", "text": ""}, swarm="storage")
    # Input only the memory can judge fails after one attempt: retrying cannot make it fit.
    bad = client.run("memory.store", {"id": "e1", "text": "   "}, swarm="storage")
    assert not bad.ok and "records[0].text: is empty" in bad.error and bad.attempts == 1


def test_status_lists_the_memory_stores(client):
    memories = {m["name"]: m for m in client.status()["memory"]}
    assert set(memories) == {"storage", "global"} and memories["storage"]["dim"] == 384
