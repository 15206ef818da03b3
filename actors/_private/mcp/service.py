"""The federation as a Ray actor: `McpFederation` (named `mcp:federation`) wraps `Federation`,
keeps its pins in the registry's KV (`mcp.pins`, journaled there), and reaches stdio upstreams
through their `McpStdioServer` actors. `start_federation` / `stop_federation` create and remove
those actors for `up` and `down`."""

from __future__ import annotations

import asyncio
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

    async def ready(self) -> int:
        """Connects the upstreams and lists their tools (once); the count of tools listed."""
        return len((await self._federation()).tools())

    async def catalog(self, family: str | None = None) -> list[dict[str, Any]]:
        entries = await (await self._federation()).catalog(family)
        # `schema` is the key of the queens' own catalog entries.
        return [{**e, "schema": e["payload_schema"]} for e in entries]

    async def tools(self) -> list[dict[str, Any]]:
        return (await self._federation()).tools()

    async def servers(self) -> list[dict[str, Any]]:
        fed = await self._federation()
        await fed.poll()
        return fed.servers()

    async def approve(
        self, server_or_group: str, tool: str | None = None, hash: str | None = None
    ) -> list[str]:
        """Pins current definitions (only if they have `hash`, when given); see `Federation.approve`."""
        return await (await self._federation()).approve(server_or_group, tool, hash)

    async def refresh(self, server: str | None = None) -> list[str]:
        return await (await self._federation()).refresh(server)

    async def call(
        self,
        capability: str,
        arguments: dict[str, Any],
        deadline_s: float | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        fed = self._fed or await self._federation()
        return await fed.call(capability, arguments, deadline_s, request_id)

    async def list_resources(self) -> dict[str, Any]:
        return await (await self._federation()).list_resources()

    async def read_resource(self, uri: str) -> dict[str, Any]:
        return await (await self._federation()).read_resource(uri)

    async def list_prompts(self) -> dict[str, Any]:
        return await (await self._federation()).list_prompts()

    async def get_prompt(self, name: str, arguments: dict[str, str] | None = None) -> dict[str, Any]:
        return await (await self._federation()).get_prompt(name, arguments)

    async def complete(
        self, ref: dict[str, Any], argument: dict[str, str], context_arguments: dict[str, str] | None = None
    ) -> dict[str, Any]:
        return await (await self._federation()).complete(ref, argument, context_arguments)


def start_federation(
    servers: dict[str, McpServerConfig],
    federation: McpFederationConfig,
    ray_namespace: str,
    resources: dict[str, float] | None = None,
) -> Any:
    """Creates (or finds) the federation actor of a system; it creates the stdio actors itself
    when it first starts. Returns its handle; `ready.remote()` waits for the first listing."""
    options: dict[str, Any] = dict(_CONTROL)
    if resources:
        options["resources"] = dict(resources)
    return (
        ray.remote(McpFederation)
        .options(name=names.MCP_FEDERATION, namespace=ray_namespace, max_concurrency=10_000, **options)
        .remote(
            {n: c.model_dump(mode="json") for n, c in servers.items()},
            federation.model_dump(mode="json"),
            ray_namespace,
        )
    )


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
