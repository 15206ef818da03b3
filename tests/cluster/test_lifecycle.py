"""`up` on a system that already runs, and `down` of whatever runs in a namespace."""

import pytest
import ray

from benchmarks._chaos import chaos_swarm
from cluster import SystemConfigChangedError, down, load_config, status, up


def system(namespace, **swarms):
    return load_config({"namespace": namespace, "swarms": swarms})


def test_up_with_a_changed_config_is_refused_with_the_difference(head, namespace):
    first = system(namespace, one=chaos_swarm(agents=1), two=chaos_swarm(agents=1))
    up(first)
    try:
        assert up(first)["namespace"] == namespace  # the same file again: idempotent
        changed = system(namespace, one=chaos_swarm(agents=2), three=chaos_swarm(agents=1))
        with pytest.raises(SystemConfigChangedError) as info:
            up(changed)
        message = str(info.value)
        assert "swarm 'three' added" in message and "swarm 'two' removed" in message
        assert "swarms.one.pools.nonce.min_agents: 1 -> 2" in message
        assert "`swarm down` first" in message
        # Nothing of the refused file was applied: the stored config and the actors are the first.
        assert sorted(s["swarm"] for s in status(namespace)["swarms"]) == ["one", "two"]
        with pytest.raises(ValueError):
            ray.get_actor("queen:three", namespace=namespace)
    finally:
        down(namespace)


def test_down_removes_every_swarm_of_the_namespace_whatever_the_stored_config_says(head, namespace):
    up(system(namespace, one=chaos_swarm(agents=1), two=chaos_swarm(agents=1)))
    registry = ray.get_actor("registry", namespace=namespace)
    # A stored config that lost a swarm (as an older `up` of a changed file left it).
    smaller = system(namespace, one=chaos_swarm(agents=1)).model_dump(mode="json", by_alias=True)
    ray.get(registry.set_system_config.remote(smaller))
    removed = down(namespace)
    assert {"queen:two", "health:two", "queen:one"} <= set(removed)
    left = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == namespace]
    assert left == []
