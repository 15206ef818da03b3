"""The federation as a Ray actor: `McpFederation` (named `mcp:federation`) wraps `Federation`,
keeps its pins in the registry's KV (`mcp.pins`, journaled there), and reaches stdio upstreams
through their `McpStdioServer` actors. `start_federation` / `stop_federation` create and remove
those actors for `up` and `down`."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray
from ray.exceptions import RayTaskError

from actors._private.mcp.config import McpFederationConfig, McpServerConfig
from actors._private.mcp.federation import Federation
from actors._private.mcp.stdio import McpStdioServer, StdioActorUpstream
from actors._private.mcp.upstream import Upstream, http_upstream
from models._private.core import names
from models._private.core.retry import unwrap_error

__all__ = ["PINS_KEY", "McpFederation", "RegistryPins", "start_federation", "stop_federation"]

PINS_KEY = "mcp.pins"  # the registry KV key of the approved definition hashes
log = logging.getLogger(__name__)
_CONTROL = dict(lifetime="detached", get_if_exists=True, num_cpus=0, max_restarts=-1)


class RegistryPins:
    """Pins in the registry's key-value store, under `mcp.pins` (the registry journals it)."""

    def __init__(self, ray_namespace: str):
        self.ray_namespace = ray_namespace

    def _registry(self) -> Any:
        return ray.get_actor(names.REGISTRY, namespace=self.ray_namespace)

    async def load(self) -> dict[str, str]:
        try:
            return dict(await self._registry().kv_get.remote(PINS_KEY) or {})
        except RayTaskError as e:
            raise unwrap_error(e) from None

    async def save(self, pins: dict[str, str]) -> None:
        try:
            await self._registry().kv_put.remote(PINS_KEY, pins)
        except RayTaskError as e:
            raise unwrap_error(e) from None


class McpFederation:
    """The federation of a system's MCP upstreams (an async Ray actor; see the contract in the
    module docstring of `actors._private.mcp.federation`). Every method takes and returns JSON.

    Args:
        servers: each upstream's `McpServerConfig` as JSON, by name.
        federation: the `McpFederationConfig` as JSON.
        ray_namespace: the system's namespace (its registry, the stdio actors).
    """

    def __init__(self, servers: dict[str, dict], federation: dict, ray_namespace: str):
        self.ray_namespace = ray_namespace
        self.config = McpFederationConfig.model_validate(federation)
        self.servers_config = {n: McpServerConfig.model_validate(c) for n, c in servers.items()}
        self._fed: Federation | None = None
        self._starting: asyncio.Task | None = None

    def _upstream(self, name: str, cfg: McpServerConfig) -> Upstream:
        if cfg.url is not None:
            return http_upstream(name, str(cfg.url), cfg.headers_from_env)
        actor = (
            ray.remote(McpStdioServer)
            .options(
                name=names.mcp_stdio(name),
                namespace=self.ray_namespace,
                max_concurrency=10_000,
                max_task_retries=0,
                **_CONTROL,
            )
            .remote(name, cfg.model_dump(mode="json"), self.ray_namespace)
        )
        return StdioActorUpstream(name, actor)

    async def _federation(self) -> Federation:
        if self._fed is not None:
            return self._fed
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        starting = self._starting
        try:
            return await asyncio.shield(starting)
        except Exception:
            # A failed start (the registry not up yet, say) is tried again by the next caller.
            if self._starting is starting and starting.done():
                self._starting = None
            raise

    async def _start(self) -> Federation:
        upstreams = {n: self._upstream(n, c) for n, c in self.servers_config.items()}
        fed = Federation(
            self.servers_config,
            upstreams,
            RegistryPins(self.ray_namespace),
            swarm=self.config.swarm,
            list_ttl_s=self.config.list_ttl_s,
        )
        await fed.start()
        self._fed = fed
        return fed

    def held_config(self) -> dict[str, Any]:
        """The configuration this actor runs (`servers`, `federation`), as JSON: `up` compares it
        with the system's and makes a new federation when they differ."""
        return _config_json(self.servers_config, self.config)

    async def ready(self) -> int:
        """Connects the upstreams and lists their tools (once); the count of tools listed."""
        return len((await self._federation()).tools())

    async def catalog(self, family: str | None = None) -> list[dict[str, Any]]:
        """Approved tools as catalog entries (of one family 'prefix.*' when given), each with `schema` as the
        queens' own entries have it."""
        entries = await (await self._federation()).catalog(family)
        # `schema` is the key of the queens' own catalog entries.
        return [{**e, "schema": e["payload_schema"]} for e in entries]

    async def tools(self) -> list[dict[str, Any]]:
        """Every upstream tool with its state and hashes (pinned, current)."""
        return (await self._federation()).tools()

    async def servers(self) -> list[dict[str, Any]]:
        """Every upstream's row: transport, group, health, breaker, load, latency, last error (URL
        redacted)."""
        fed = await self._federation()
        await fed.poll()
        return fed.servers()

    async def approve(
        self, server_or_group: str, tool: str | None = None, hash: str | None = None
    ) -> list[str]:
        """Pins current definitions (only if they have `hash`, when given); see `Federation.approve`."""
        return await (await self._federation()).approve(server_or_group, tool, hash)

    async def refresh(self, server: str | None = None) -> list[str]:
        """Lists the tools of `server` (or of every upstream) now; returns the servers listed."""
        return await (await self._federation()).refresh(server)

    async def call(
        self,
        capability: str,
        arguments: dict[str, Any],
        deadline_s: float | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Calls the federated tool `capability` (see `Federation.call`); its CallToolResult JSON."""
        fed = self._fed or await self._federation()
        return await fed.call(capability, arguments, deadline_s, request_id)

    async def list_resources(self) -> dict[str, Any]:
        """The upstreams' resources, their URIs under each server's prefix."""
        return await (await self._federation()).list_resources()

    async def read_resource(self, uri: str) -> dict[str, Any]:
        """Reads a resource by its federated URI from the upstream that lists it."""
        return await (await self._federation()).read_resource(uri)

    async def list_prompts(self) -> dict[str, Any]:
        """The upstreams' prompts, named under each server's prefix."""
        return await (await self._federation()).list_prompts()

    async def get_prompt(self, name: str, arguments: dict[str, str] | None = None) -> dict[str, Any]:
        """Gets a prompt by its federated name from its upstream."""
        return await (await self._federation()).get_prompt(name, arguments)

    async def complete(
        self, ref: dict[str, Any], argument: dict[str, str], context_arguments: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Completes a prompt's or resource template's argument through its upstream."""
        return await (await self._federation()).complete(ref, argument, context_arguments)


def start_federation(
    servers: dict[str, McpServerConfig],
    federation: McpFederationConfig,
    ray_namespace: str,
    resources: dict[str, float] | None = None,
) -> Any:
    """Creates (or finds) the federation actor of a system; it creates the stdio actors itself
    when it first starts. One found running another configuration (`up` after `mcp.servers` or
    `mcp.federation` changed) is stopped with its stdio actors and made anew. Returns its
    handle; `ready.remote()` waits for the first listing."""
    options: dict[str, Any] = dict(_CONTROL)
    if resources:
        options["resources"] = dict(resources)
    wanted = _config_json(servers, federation)

    def create() -> Any:
        return (
            ray.remote(McpFederation)
            .options(name=names.MCP_FEDERATION, namespace=ray_namespace, max_concurrency=10_000, **options)
            .remote(wanted["servers"], wanted["federation"], ray_namespace)
        )

    handle = create()
    held = ray.get(handle.held_config.remote(), timeout=60)
    if held == wanted:
        return handle
    log.info("MCP federation of %s: its configuration changed; starting it anew", ray_namespace)
    stop_federation(sorted({*held["servers"], *servers}), ray_namespace)
    return create()


def _config_json(servers: dict[str, McpServerConfig], federation: McpFederationConfig) -> dict[str, Any]:
    return {
        "servers": {n: c.model_dump(mode="json") for n, c in sorted(servers.items())},
        "federation": federation.model_dump(mode="json"),
    }


def stop_federation(servers: list[str], ray_namespace: str) -> None:
    """Ends the stdio processes and kills the federation and stdio actors (those that exist)."""
    for name in servers:
        try:
            actor = ray.get_actor(names.mcp_stdio(name), namespace=ray_namespace)
        except ValueError:
            continue
        try:
            ray.get(actor.shutdown.remote(), timeout=10)
        except Exception:  # dead or stuck: killing it ends its process group's child too
            pass
        ray.kill(actor, no_restart=True)
    try:
        ray.kill(ray.get_actor(names.MCP_FEDERATION, namespace=ray_namespace), no_restart=True)
    except ValueError:
        pass
    # The names are free once the actors are gone: a federation made next is a new one.
    wanted = [names.MCP_FEDERATION, *(names.mcp_stdio(n) for n in servers)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_exists(n, ray_namespace) for n in wanted):
        time.sleep(0.1)


def _exists(name: str, ray_namespace: str) -> bool:
    try:
        ray.get_actor(name, namespace=ray_namespace)
    except ValueError:
        return False
    return True
