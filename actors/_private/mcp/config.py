"""Configuration of the MCP federation: one `McpServerConfig` per upstream (`mcp.servers`) and
`McpFederationConfig` (`mcp.federation`)."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, Field, PositiveFloat, PositiveInt, model_validator

from models._private.core.breaker import CircuitBreakerConfig
from models._private.core.config import CapabilityName, ConfigModel, Name
from models._private.core.uris import redact_uri

__all__ = ["McpFederationConfig", "McpServerConfig"]


class McpServerConfig(ConfigModel):
    """One remote MCP server (an upstream), by URL (Streamable HTTP) or by stdio command."""

    url: AnyHttpUrl | None = Field(None, description="Streamable HTTP endpoint of the upstream.")
    command: list[str] | None = Field(
        None, min_length=1, description="stdio upstream: the argv to run (in its own supervising actor)."
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="stdio: extra environment variables of the process, literal values."
    )
    env_from: dict[str, str] = Field(
        default_factory=dict,
        description="stdio: child env var -> the name of an env var of the supervising actor's process.",
    )
    headers_from_env: dict[str, str] = Field(
        default_factory=dict,
        description="HTTP header -> the name of the env var holding its value (never the caller's key).",
    )
    group: Name | None = Field(
        None,
        description="Upstreams of one group offer the same tools (replicas, fallback); default its name.",
    )
    prefix: CapabilityName | None = Field(
        None, description="Capability prefix of its tools; default 'mcp.<group>'."
    )
    trusted: bool = Field(
        False,
        description="Whether its readOnlyHint/idempotentHint annotations allow a retry on another upstream.",
    )
    timeout_s: PositiveFloat = Field(30.0, description="Deadline of one call to this upstream.")
    breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    approve: Literal["first_use", "manual"] = Field(
        "first_use",
        description="first_use: a tool's first definition seen is pinned; manual: it waits for approval.",
    )

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.url is None) == (self.command is None):
            raise ValueError(
                f"give exactly one of url ({redact_uri(str(self.url)) if self.url else None}) and command"
                f" ({self.command}) for an MCP upstream"
            )
        if self.url is not None and (self.env or self.env_from):
            raise ValueError("env and env_from are for stdio upstreams (command), not url")
        if self.command is not None and self.headers_from_env:
            raise ValueError("headers_from_env is for HTTP upstreams (url), not command")
        return self

    @property
    def kind(self) -> str:
        """http or stdio."""
        return "http" if self.url is not None else "stdio"

    def group_of(self, name: str) -> str:
        """Its group: the configured one, else its own name."""
        return self.group or name

    def prefix_of(self, name: str) -> str:
        """Its capability prefix: the configured one, else 'mcp.<group>' ('-' read as '_')."""
        return self.prefix or "mcp." + self.group_of(name).replace("-", "_")


class McpFederationConfig(ConfigModel):
    """How federated MCP tools run as tasks, and how long a tools list is trusted."""

    swarm: Name = Field("mcp", description="The swarm that runs federated calls as tasks.")
    agents: PositiveInt = Field(2, description="McpToolAgent instances in that swarm (one host).")
    list_ttl_s: PositiveFloat = Field(
        300.0, description="How long a tools list is used when the upstream gives no ttlMs."
    )
