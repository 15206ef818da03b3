import time

import pytest

from actors import RegistryConfig
from actors._private.registry import MetaRegistry
from cluster import DelegationError, UnknownCapabilityError


def registry(policy="least_loaded", **swarms):
    reg = MetaRegistry(RegistryConfig(conflict_policy=policy, stale_after_s=5))
    for name, (caps, priority, queued, slots) in swarms.items():
        registration = {"name": name, "capabilities": caps, "priority": priority, "description": ""}
        reg.heartbeat(registration, {"queued": queued, "running": 0, "slots": slots}, "healthy")
    return reg


def test_discover_lists_only_swarms_with_the_capability():
    reg = registry(a=(["x", "y"], 0, 0, 1), b=(["y"], 0, 0, 1))
    assert reg.discover("x") == ["a"]
    assert set(reg.discover("y")) == {"a", "b"}
    assert reg.discover("z") == []


def test_least_loaded_picks_lowest_load_per_slot():
    reg = registry(a=(["x"], 0, 8, 4), b=(["x"], 0, 3, 1))
    assert reg.route("x", []) == "a"  # 2 per slot beats 3 per slot


def test_routing_counts_its_own_choices_until_the_next_heartbeat():
    reg = registry(a=(["x"], 0, 0, 1), b=(["x"], 0, 0, 1))
    picks = [reg.route("x", []) for _ in range(10)]
    assert picks.count("a") == picks.count("b") == 5


def test_priority_policy_prefers_higher_priority_despite_load():
    reg = registry("priority", a=(["x"], 1, 50, 1), b=(["x"], 0, 0, 1))
    assert reg.route("x", []) == "a"


def test_round_robin_rotates():
    reg = registry("round_robin", a=(["x"], 0, 0, 1), b=(["x"], 0, 0, 1))
    assert [reg.route("x", []) for _ in range(4)] == ["a", "b", "a", "b"]


def test_visited_swarms_are_never_chosen():
    reg = registry(a=(["x"], 0, 0, 1), b=(["x"], 0, 9, 1))
    assert reg.route("x", ["a"]) == "b"
    with pytest.raises(DelegationError, match="visited"):
        reg.route("x", ["a", "b"])


def test_unknown_capability_lists_what_is_offered():
    reg = registry(a=(["x"], 0, 0, 1))
    with pytest.raises(UnknownCapabilityError, match=r"'nope'.*\['x'\]"):
        reg.route("nope", [])


def test_unhealthy_and_stale_swarms_are_skipped(monkeypatch):
    reg = registry(a=(["x"], 0, 0, 1), b=(["x"], 0, 5, 1), c=(["x"], 0, 9, 1))
    reg.mark("a", "unreachable", "queen did not answer")
    assert reg.route("x", []) == "b"
    later = time.monotonic() + 6
    reg.swarms["c"].last_heartbeat = later  # c heartbeats again; b does not
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert reg.route("x", []) == "c"
    with pytest.raises(DelegationError, match="no heartbeat"):
        reg.route("x", ["c"])


def test_degraded_swarm_is_used_only_when_no_healthy_one_is():
    reg = registry(a=(["x"], 0, 0, 1), b=(["x"], 0, 9, 1))
    reg.mark("a", "degraded", "1 of 2 hosts not alive")
    assert reg.route("x", []) == "b"
    assert reg.route("x", ["b"]) == "a"


def test_heartbeat_restores_a_lost_table():
    reg = MetaRegistry(RegistryConfig())
    reg.heartbeat(
        {"name": "a", "capabilities": ["x"], "priority": 0, "description": ""},
        {"queued": 0, "running": 0, "slots": 2},
        "healthy",
    )
    assert reg.route("x", []) == "a"


def test_kv_compare_and_set():
    reg = MetaRegistry(RegistryConfig())
    assert reg.kv_put("leader", "a", expected_version=0) == 1
    assert reg.kv_put("leader", "b", expected_version=0) is None
    assert reg.kv_get("leader") == "a"
    assert reg.kv_put("leader", "b", expected_version=1) == 2
    assert reg.kv_keys("lea") == ["leader"]
    assert reg.kv_delete("leader") and reg.kv_get("leader", "gone") == "gone"


def test_kv_store_survives_a_restart_through_its_journal(tmp_path):
    reg = MetaRegistry(RegistryConfig(), journal_uri=str(tmp_path))
    reg.kv_put("a", 1)
    reg.kv_put("a", 2)
    reg.kv_put("b", "x")
    reg.kv_delete("b")
    again = MetaRegistry(RegistryConfig(), journal_uri=str(tmp_path))
    assert again.kv_get("a") == 2 and again.kv_version("a") == 2 and again.kv_get("b") is None


AGENTS_SECRET = "sr-" + "0123456789abcdef" * 4


def _stored(root):
    """Every byte the registry's journal holds on disk."""
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_the_agents_key_is_served_but_never_written_to_the_registrys_journal(tmp_path):
    from actors._private.services import AI_URL_KEY, SERVICE_KEY_KEY

    reg = MetaRegistry(RegistryConfig(), journal_uri=str(tmp_path))
    reg.kv_put(AI_URL_KEY, "http://127.0.0.1:8000/v1")
    reg.kv_put(SERVICE_KEY_KEY, AGENTS_SECRET)
    assert reg.kv_get(SERVICE_KEY_KEY) == AGENTS_SECRET and reg.kv_version(SERVICE_KEY_KEY) == 1
    assert b"http://127.0.0.1:8000/v1" in _stored(tmp_path)  # what is journaled is there
    assert AGENTS_SECRET.encode() not in _stored(tmp_path)
    assert reg.kv_delete(SERVICE_KEY_KEY) and reg.kv_get(SERVICE_KEY_KEY) is None


def test_an_older_journal_holding_the_agents_key_in_clear_is_scrubbed_on_start(tmp_path):
    from actors._private.services import AI_URL_KEY, SERVICE_KEY_KEY
    from models._private.core.journal import Journal

    old = Journal(str(tmp_path))
    old.write_now(
        {"k": "put", "key": SERVICE_KEY_KEY, "value": AGENTS_SECRET, "version": 1},
        {"k": "put", "key": AI_URL_KEY, "value": "http://127.0.0.1:8000/v1", "version": 1},
    )
    old.close()
    reg = MetaRegistry(RegistryConfig(), journal_uri=str(tmp_path))
    assert reg.kv_get(AI_URL_KEY) == "http://127.0.0.1:8000/v1"
    assert reg.kv_get(SERVICE_KEY_KEY) == AGENTS_SECRET  # moved out of the journal, still served
    assert AGENTS_SECRET.encode() not in _stored(tmp_path)
    again = MetaRegistry(RegistryConfig(), journal_uri=str(tmp_path))
    assert again.kv_get(AI_URL_KEY) == "http://127.0.0.1:8000/v1" and again.kv_version(AI_URL_KEY) == 1


# -- capability families ----------------------------------------------------------------------


def test_capability_offered_prefers_the_exact_name_then_the_longest_family():
    from models._private.core.names import capability_offered

    offered = ["mcp.*", "mcp.fs.*", "mcp.fs.read"]
    assert capability_offered(offered, "mcp.fs.read") == "mcp.fs.read"
    assert capability_offered(offered, "mcp.fs.write") == "mcp.fs.*"
    assert capability_offered(offered, "mcp.fs.deep.write") == "mcp.fs.*"
    assert capability_offered(offered, "mcp.git.log") == "mcp.*"
    assert capability_offered(offered, "mcp") is None  # a family covers names below its prefix only
    assert capability_offered(offered, "mcpx.a") is None
    assert capability_offered([], "x") is None


def test_a_family_routes_and_discovers_every_capability_under_it():
    reg = registry(a=(["echo.*"], 0, 0, 1), b=(["echo.special"], 0, 9, 1))
    assert reg.discover("echo.x") == ["a"]
    assert reg.route("echo.x.y", []) == "a"
    assert set(reg.discover("echo.special")) == {"a", "b"}  # the family covers it too
    assert reg.capabilities() == ["echo.*", "echo.special"]
    with pytest.raises(UnknownCapabilityError):
        reg.route("echo", [])
    with pytest.raises(DelegationError, match="visited"):
        reg.route("echo.x", ["a"])


def heartbeat(reg, name, caps, health="healthy", priority=0):
    registration = {"name": name, "capabilities": caps, "priority": priority, "description": ""}
    reg.heartbeat(registration, {"queued": 0, "running": 0, "slots": 1}, health)


def test_the_generation_moves_on_with_every_change_routing_can_see_and_only_then():
    reg = registry(a=(["x"], 0, 0, 1))
    seen = [reg.generation]

    def moved():
        seen.append(reg.generation)
        return seen[-1] > seen[-2]

    heartbeat(reg, "a", ["x"])  # load only
    assert not moved()
    heartbeat(reg, "b", ["x"])  # a new swarm
    assert moved()
    heartbeat(reg, "b", ["x", "y"])  # its capabilities
    assert moved()
    heartbeat(reg, "b", ["x", "y"], priority=3)
    assert moved()
    heartbeat(reg, "b", ["x", "y"], health="degraded", priority=3)
    assert moved()
    heartbeat(reg, "b", ["x", "y"], health="degraded", priority=3)
    assert not moved()
    reg.mark("b", "unreachable", "no answer")
    assert moved()
    reg.register({"name": "b", "capabilities": ["x", "y"], "priority": 3, "description": ""})
    assert moved()  # answering again
    reg.deregister("b")
    assert moved()
    reg.deregister("b")
    assert not moved()


def test_routing_marks_cacheable_only_a_choice_that_load_cannot_move():
    one = registry(a=(["x"], 0, 0, 1), b=(["y"], 0, 0, 1))
    assert one.routing("x", [])["cacheable"]  # the only candidate
    tied = registry(a=(["x"], 0, 0, 1), b=(["x"], 0, 0, 1))
    assert not tied.routing("x", [])["cacheable"]  # least loaded: the next may go to the other
    ranked = registry("priority", a=(["x"], 1, 50, 1), b=(["x"], 0, 0, 1))
    assert ranked.routing("x", []) == {
        "swarm": "a",
        "swarms": ["a"],
        "generation": ranked.generation,
        "cacheable": True,
    }
    same = registry("priority", a=(["x"], 1, 0, 1), b=(["x"], 1, 0, 1))
    assert not same.routing("x", [])["cacheable"]
    rr = registry("round_robin", a=(["x"], 1, 0, 1), b=(["x"], 0, 0, 1))
    assert not rr.routing("x", [])["cacheable"]


def test_routing_counts_every_task_of_a_batch_against_its_swarm():
    reg = registry(a=(["x"], 0, 0, 1), b=(["x"], 0, 2, 1))
    assert reg.routing("x", [], count=2)["swarms"] == ["a", "a"]  # a catches up with b's 2
    assert [reg.route("x", []) for _ in range(4)] == ["a", "b", "a", "b"]


def test_a_stale_swarm_heartbeating_again_moves_the_generation(monkeypatch):
    """A stale swarm is out of routing; when it heartbeats again it is back in, a change a
    queen's cached route must hear of (the route cached while it was out had one candidate)."""
    reg = registry(a=(["x"], 0, 0, 1), b=(["x"], 0, 0, 1))
    later = time.monotonic() + 6
    reg.swarms["a"].last_heartbeat = later  # a heartbeats on; b goes quiet
    monkeypatch.setattr(time, "monotonic", lambda: later)
    alone = reg.routing("x", [])
    assert alone["swarm"] == "a" and alone["cacheable"]  # b is stale: a is the only candidate
    heartbeat(reg, "b", ["x"])  # b is back, as healthy as before
    assert reg.generation > alone["generation"]
    assert not reg.routing("x", [])["cacheable"]


def test_a_batch_routed_at_once_is_spread_as_one_route_per_task_would_be():
    """A queen routes the delegated tasks of one event-loop turn in one call: least-loaded
    balancing and round-robin rotation must still hold task by task, not send the lot to the
    swarm that was best for the first."""
    one_by_one = registry(a=(["x"], 0, 0, 1), b=(["x"], 0, 0, 1))
    expected = [one_by_one.route("x", []) for _ in range(6)]
    assert expected == ["a", "b"] * 3
    batched = registry(a=(["x"], 0, 0, 1), b=(["x"], 0, 0, 1))
    assert batched.routing("x", [], count=6)["swarms"] == expected
    rotating = registry("round_robin", a=(["x"], 0, 0, 1), b=(["x"], 0, 0, 1), c=(["x"], 0, 0, 1))
    assert rotating.routing("x", [], count=4)["swarms"] == ["a", "b", "c", "a"]
    assert rotating.route("x", []) == "b"  # the rotation goes on where the batch left it
