"""Configuration of the /mcp endpoint: swarmray's capabilities as MCP tools over Streamable HTTP."""

from __future__ import annotations

from pydantic import Field, PositiveFloat, PositiveInt

from models._private.core.tracing import TracingConfig
from serve._private.auth.config import AuthConfig
from serve._private.service_config import ServiceConfig, auth_field, control_resources_field

__all__ = ["McpServiceConfig"]


class McpServiceConfig(ServiceConfig):
    """The /mcp endpoint: stateless replicas that list every capability the registry offers as an
    MCP tool (plus `search_facts` and `recall_memory`) and run each call as a task through its
    swarm's queen; spec revisions 2026-07-28 and 2025-11-25."""

    route_prefix: str = Field("/mcp", description="Where the endpoint sits under Serve's HTTP root.")
    replicas: PositiveInt = Field(1, description="Ingress replicas; any of them answers any request.")
    ingress_max_ongoing_requests: PositiveInt = Field(
        1000,
        description="Requests one replica holds at once: a tools/call waits for its task (up to "
        "call_timeout_s), so Serve's default of 5 would let five slow calls hold up every client.",
    )
    auth: AuthConfig = auth_field()
    control_resources: dict[str, float] = control_resources_field("the key authority")
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origin header values accepted besides loopback ones (http://localhost:*, …); "
        "'scheme://host:*' matches any port. A request with another Origin is refused 403 (a "
        "request without one, as non-browser clients send, is accepted).",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header values accepted besides loopback names and the configured host "
        "(any port of each); 'name:*' matches any port. Another Host is refused 421 (DNS rebinding).",
    )
    progress_interval_s: PositiveFloat = Field(
        2.0, description="Seconds between progress notifications while a call waits for its task."
    )
    call_timeout_s: PositiveFloat = Field(
        300.0, description="Longest a tools/call waits for its task; the task is cancelled then."
    )
    catalog_ttl_s: PositiveFloat = Field(
        2.0, description="How long a replica reuses the capability catalog it read (tools/list)."
    )
    tracing: TracingConfig = Field(
        default_factory=TracingConfig,
        description="Server spans of the requests, nested in their callers' traces (`traceparent`), "
        "and a span per tool call over the task it runs; in a system config, the system's "
        "`tracing` unless set here.",
    )
    reexport: bool = Field(
        True,
        description="Pass the federation's resources, prompts and completions through (its tools "
        "are capabilities, listed anyway).",
    )
