"""Every deployment of the three services polls its draining every DRAIN_POLL_S, not Serve's
2 s (slept once before the first check, so each stopped replica cost `swarm down` and a
redeploy 2 s). Built as Serve builds them, with no Ray."""

from ray.serve._private.build_app import build_app as serve_build

from serve import AIServiceConfig, FactsServiceConfig, McpServiceConfig
from serve._private.service import build_app, build_facts_app, build_mcp_app
from serve._private.service_config import DRAIN_POLL_S


def _drain_polls(app) -> dict[str, float]:
    built = serve_build(app, name="drain-test", make_deployment_handle=lambda d, _: d.name)
    return {d.name: d._deployment_config.graceful_shutdown_wait_loop_s for d in built.deployments}


def test_each_services_deployments_poll_their_draining_every_half_second():
    ai = AIServiceConfig(auth={"enabled": False}, models={"m": {"source": "tiny"}})
    facts = FactsServiceConfig(auth={"enabled": False}, colocate=False)  # the shards apart too
    apps = {
        "ai": build_app(ai, "drain-test"),
        "facts": build_facts_app(facts, "drain-test"),
        "mcp": build_mcp_app(McpServiceConfig(auth={"enabled": False}), "drain-test"),
    }
    polls = {kind: _drain_polls(app) for kind, app in apps.items()}
    assert len(polls["ai"]) >= 3 and len(polls["facts"]) >= 3, polls  # gateway, model, embeddings
    assert {p for deployments in polls.values() for p in deployments.values()} == {DRAIN_POLL_S}, polls
