"""The system config's `mcp:` section: the swarm it generates and its checks across sections.
Runs once the federation's (actors) and the endpoint's (serve) models are merged in."""

import pytest

from cluster._private.config import load_config
from models._private.core.errors import ConfigError

BASE = {"swarms": {"front": {"pools": {"text": {"agent": {"class": "actors:TextStatsAgent"}}}}}}
EVERYTHING = {"url": "http://127.0.0.1:3001/mcp"}


def with_mcp(mcp, **more):
    return load_config({**BASE, "mcp": mcp, **more})


def problems(mcp, **more):
    with pytest.raises(ConfigError) as e:
        with_mcp(mcp, **more)
    return dict(e.value.problems)


def test_the_generated_swarm_offers_each_group_prefix_as_a_family_through_mcp_tool_agents():
    config = with_mcp(
        {
            "servers": {
                "ev": EVERYTHING,
                "ev_backup": {"url": "http://127.0.0.1:3002/mcp", "group": "ev"},
                "files": {"command": ["python", "-m", "some.server"], "prefix": "fs"},
            },
            "federation": {"swarm": "tools", "agents": 3},
        }
    )
    assert config.mcp.families() == ["fs.*", "mcp.ev.*"]
    assert [s.name for s in config.all_swarms()] == ["front", "tools"]
    pool = config.mcp.swarm().pools["tools"]
    assert pool.agent.class_path == "actors:McpToolAgent"
    assert pool.agent.capability_names == ["fs.*", "mcp.ev.*"]
    assert (pool.min_agents, pool.max_agents, pool.agents_per_actor) == (3, 3, 3)
    assert config.mcp.server is not None and config.mcp.server.route_prefix == "/mcp"  # on by default


def test_no_upstreams_means_no_generated_swarm_and_a_null_server_means_no_endpoint():
    config = with_mcp({"server": None})
    assert config.mcp.server is None and [s.name for s in config.all_swarms()] == ["front"]


def test_group_members_must_share_their_prefix():
    found = problems({"servers": {"a": EVERYTHING, "b": {**EVERYTHING, "group": "a", "prefix": "other"}}})
    assert found == {
        "mcp.servers.b.prefix": "is 'other', but 'a' of group 'a' has 'mcp.a': "
        "a group offers one set of tools"
    }


def test_a_prefix_may_not_collide_with_a_swarm_capability_or_hold_another_prefix():
    found = problems(
        {"servers": {"a": {**EVERYTHING, "prefix": "text"}, "b": {**EVERYTHING, "prefix": "text.x"}}}
    )
    assert found["mcp.servers.a.prefix"] == "'text' collides with capability 'text.stats' of swarm 'front'"
    assert found["mcp.servers.b.prefix"] == (
        "'text.x' is under the prefix 'text' of server 'a': tools cannot be told apart"
    )


def test_a_group_name_with_a_hyphen_makes_its_default_prefix_with_an_underscore():
    config = with_mcp({"servers": {"my-server": EVERYTHING}})
    assert config.mcp.families() == ["mcp.my_server.*"]


def test_the_federation_swarm_needs_a_name_no_configured_swarm_has():
    found = problems({"servers": {"a": EVERYTHING}, "federation": {"swarm": "front"}})
    assert found == {
        "mcp.federation.swarm": "names a configured swarm ('front'): the federation needs its own"
    }


def test_the_endpoint_shares_the_ai_services_serve_endpoint_and_keys_at_its_own_prefix():
    found = problems(
        {"server": {"port": 9000, "route_prefix": "/v1"}},
        ai={"route_prefix": "/v1", "models": {}},
    )
    assert found["mcp.server.port"] == "must equal ai's (127.0.0.1:8000): one Serve HTTP endpoint a cluster"
    assert found["mcp.server.route_prefix"] == "is ai's too ('/v1')"


def test_the_endpoint_keeps_its_state_with_the_systems_control_resources():
    config = with_mcp({}, control_resources={"control": 0.001})
    assert config.mcp.server.control_resources == {"control": 0.001}
