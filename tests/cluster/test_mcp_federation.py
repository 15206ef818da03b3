"""The federation's actors on real Ray: `McpFederation` over a stdio upstream run by its
`McpStdioServer` actor (a real process, restarted when it exits), pins kept in the registry's
KV through a restart of the federation actor, and `McpToolAgent` running federated tools as
tasks through a queen."""

import sys

import pytest
import ray

from actors._private.mcp.config import McpFederationConfig, McpServerConfig
from actors._private.mcp.service import PINS_KEY, start_federation, stop_federation
from cluster import load_config
from models._private.core import names
from models._private.core.errors import McpUnknownToolError, McpUpstreamError
from models._private.core.retry import unwrap_error
from tests.conftest import ROOT, running_system
from tests.waiting import wait_until

NAMESPACE = "mcp-federation-tests"
SERVERS = {
    "kit": McpServerConfig(command=[sys.executable, "-m", "tests.mcp_servers"], env={"PYTHONPATH": str(ROOT)})
}


def call(ref):
    try:
        return ray.get(ref, timeout=60)
    except ray.exceptions.RayTaskError as e:
        raise unwrap_error(e) from None


@pytest.fixture(scope="module")
def system(head):
    config = load_config(
        {
            "namespace": NAMESPACE,
            "swarms": {
                "mcp": {
                    "queen": {"retry_backoff_s": 0.05, "max_retries": 1},
                    "pools": {
                        "tools": {
                            "agent": {
                                "class": "actors:McpToolAgent",
                                "capabilities": ["mcp.kit.word_count", "mcp.kit.nothing"],
                                "max_concurrent_tasks": 4,
                            }
                        }
                    },
                }
            },
        }
    )
    with running_system(config) as client:
        federation = start_federation(SERVERS, McpFederationConfig(), NAMESPACE)
        try:
            assert call(federation.ready.remote()) > 5
            yield client, federation
        finally:
            stop_federation(list(SERVERS), NAMESPACE)


def test_a_federated_tool_runs_as_a_task_through_the_queen(system):
    client, _ = system
    result = client.run("mcp.kit.word_count", {"text": "to be or not"}, swarm="mcp")
    assert result.ok, result.error
    assert result.output["structuredContent"] == {"words": 4, "lines": 1, "chars": 12}
    unknown = client.run("mcp.kit.nothing", {}, swarm="mcp")
    assert not unknown.ok and unknown.attempts == 1 and "McpUnknownToolError" in (unknown.error_type or "")


def test_the_stdio_actor_runs_the_process_again_when_it_exits(system):
    _, federation = system
    with pytest.raises(McpUpstreamError):
        call(federation.call.remote("mcp.kit.exit", {}))
    answer = call(federation.call.remote("mcp.kit.echo", {"text": "back"}, 30))
    assert answer["structuredContent"] == {"result": "back"}
    stdio = ray.get_actor(names.mcp_stdio("kit"), namespace=NAMESPACE)
    assert call(stdio.status.remote())["restarts"] >= 1
    (row,) = call(federation.servers.remote())
    assert row["kind"] == "stdio" and row["restarts"] >= 1 and row["breaker"] == "closed"


def test_pins_are_kept_in_the_registry_and_survive_a_restart_of_the_federation(system):
    _, federation = system
    registry = ray.get_actor(names.REGISTRY, namespace=NAMESPACE)
    pins = call(registry.kv_get.remote(PINS_KEY))
    assert "kit/echo" in pins and len(pins) > 5
    # A pin that no longer matches (as if the upstream had changed the tool) holds it back after a restart.
    call(registry.kv_put.remote(PINS_KEY, {**pins, "kit/echo": "0" * 64}))
    ray.kill(federation, no_restart=False)

    def restarted() -> dict | None:  # the old instance may answer until it is gone
        states = {t["tool"]: t["state"] for t in call(federation.tools.remote())}
        return states if states["echo"] == "changed" else None

    states = wait_until(restarted, 60, "the restarted federation to hold back echo")
    assert states["sha256"] == "approved"
    assert call(federation.approve.remote("kit", "echo")) == ["mcp.kit.echo"]
    assert call(registry.kv_get.remote(PINS_KEY))["kit/echo"] == pins["kit/echo"]
    with pytest.raises(McpUnknownToolError):
        call(federation.call.remote("mcp.kit.absent", {}))


def test_a_changed_configuration_makes_a_new_federation_and_the_same_keeps_it(system):
    _, federation = system
    same = start_federation(SERVERS, McpFederationConfig(), NAMESPACE)
    assert same._actor_id == federation._actor_id
    changed = {"kit": SERVERS["kit"].model_copy(update={"timeout_s": 7.0})}
    try:
        new = start_federation(changed, McpFederationConfig(), NAMESPACE)
        assert new._actor_id != federation._actor_id
        assert call(new.held_config.remote())["servers"]["kit"]["timeout_s"] == 7.0
        assert call(new.ready.remote()) > 5  # its stdio actor was made anew with it
    finally:
        start_federation(SERVERS, McpFederationConfig(), NAMESPACE)  # as the module's other tests had it
