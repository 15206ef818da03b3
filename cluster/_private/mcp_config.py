"""The system config's `mcp:` section: swarmray's own MCP endpoint (`/mcp`, from `serve`), the
upstream MCP servers it federates (from `actors`), and the swarm `up` generates to run their
tools as tasks. The section composes the packages' models; the checks across them, and across
the rest of the system config, live here."""

from __future__ import annotations

from pydantic import Field

from actors import McpFederationConfig, McpServerConfig, SwarmConfig
from models._private.core.config import ConfigModel, Name, named
from models._private.core.names import capability_offered
from serve import McpServiceConfig

__all__ = ["MCP_TOOL_AGENT", "McpConfig"]

MCP_TOOL_AGENT = "actors:McpToolAgent"  # the agent class of the generated swarm's one pool


class McpConfig(ConfigModel):
    """MCP: swarmray as an MCP server, and upstream MCP servers federated as capabilities."""

    server: McpServiceConfig | None = Field(
        default_factory=McpServiceConfig,
        description="The MCP endpoint (`POST /mcp`) every swarm capability is a tool of; on by "
        "default when `mcp:` is given; null: none.",
    )
    servers: dict[Name, McpServerConfig] = Field(
        default_factory=dict,
        description="Upstream MCP servers by name (a URL or a stdio command), whose tools become "
        "capabilities under their group's prefix (default 'mcp.<group>').",
    )
    federation: McpFederationConfig = Field(
        default_factory=McpFederationConfig,
        description="The federation of `servers`: the swarm that runs their tools, list caching.",
    )

    def group_of(self, server: str) -> str:
        """The group of an upstream (`McpServerConfig.group_of`)."""
        return self.servers[server].group_of(server)

    def prefix_of(self, server: str) -> str:
        """The capability prefix of an upstream's tools (`McpServerConfig.prefix_of`)."""
        return self.servers[server].prefix_of(server)

    def groups(self) -> dict[str, list[str]]:
        """Group name -> its upstreams, in config order."""
        out: dict[str, list[str]] = {}
        for server in self.servers:
            out.setdefault(self.group_of(server), []).append(server)
        return out

    def families(self) -> list[str]:
        """The capability families the federation offers: each group's prefix + '.*', sorted."""
        return sorted({self.prefix_of(members[0]) + ".*" for members in self.groups().values()})

    def swarm(self) -> SwarmConfig:
        """The swarm `up` adds to run federated tools: one pool `tools` of McpToolAgents, one
        host with `federation.agents` agents, offering every group's family."""
        agents = self.federation.agents
        pool = {
            "agent": {
                "class": MCP_TOOL_AGENT,
                "capabilities": [{"name": f} for f in self.families()],
                # I/O bound: each call waits on the federation actor, which holds the deadline.
                "max_concurrent_tasks": 256,
            },
            "min_agents": agents,
            "max_agents": agents,
            "agents_per_actor": agents,
            "resources": {"num_cpus": 0},
        }
        return SwarmConfig.model_validate(
            {
                "name": self.federation.swarm,
                "description": "Tools of the federated MCP servers, as capabilities.",
                "pools": named({"tools": pool}),
            }
        )

    def problems(self, swarms: dict[str, SwarmConfig]) -> list[tuple[str, str]]:
        """(field, reason) of each inconsistency within the section and against `swarms`."""
        problems: list[tuple[str, str]] = []
        at = "mcp.servers"
        for group, members in self.groups().items():
            prefixes = {m: self.prefix_of(m) for m in members}
            first, prefix = members[0], prefixes[members[0]]
            for m in members[1:]:
                if prefixes[m] != prefix:
                    why = (
                        f"is {prefixes[m]!r}, but {first!r} of group {group!r} has {prefix!r}: "
                        "a group offers one set of tools"
                    )
                    problems.append((f"{at}.{m}.prefix", why))
        prefixes = {self.prefix_of(s): s for s in self.servers}
        for prefix, server in prefixes.items():
            family = prefix + ".*"
            for other, other_server in prefixes.items():
                if other != prefix and capability_offered([family], other) == family:
                    why = f"{other!r} is under the prefix {prefix!r} of server {server!r}"
                    why += ": tools cannot be told apart"
                    problems.append((f"{at}.{other_server}.prefix", why))
            for swarm in swarms.values():
                for cap in swarm.capabilities:
                    covered = capability_offered([family], cap) or capability_offered([cap], prefix)
                    if cap == prefix or covered:
                        why = f"{prefix!r} collides with capability {cap!r} of swarm {swarm.name!r}"
                        problems.append((f"{at}.{server}.prefix", why))
        if self.servers and self.federation.swarm in swarms:
            why = f"names a configured swarm ({self.federation.swarm!r}): the federation needs its own"
            problems.append(("mcp.federation.swarm", why))
        return problems
