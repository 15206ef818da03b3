"""The system's configuration: one YAML file composing every package's config models.

A system is a Ray namespace holding one meta registry, any number of swarms (`actors`), their
memories (`models`) and the AI service (`serve`). Each package owns its config models; this
module only composes them and loads the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, PositiveFloat, ValidationError, field_validator, model_validator

from actors._private.config import MemoryStoreConfig, RegistryConfig, SwarmConfig
from cluster._private.mcp_config import McpConfig
from models._private.core import env
from models._private.core.config import ConfigModel, Name, named
from models._private.core.errors import ConfigError
from models._private.core.journal import journal_location, nested_in
from models._private.core.tracing import TracingConfig
from models._private.core.uris import redact_uri
from serve._private.ai.config import AIServiceConfig
from serve._private.facts.config import FactsServiceConfig

__all__ = ["SystemConfig", "config_changes", "load_config", "unset_secrets"]


class SystemConfig(ConfigModel):
    """A whole system: a Ray namespace with a registry and swarms."""

    namespace: Name = Field("swarmray", description="Ray namespace holding the system's actors.")
    registry: RegistryConfig = Field(default_factory=RegistryConfig, description="Meta registry.")
    control_resources: dict[str, PositiveFloat] = Field(
        default_factory=dict,
        description="Custom Ray resources every actor that holds the system's state asks for "
        "(the registry, queens, monitors, memory stores, and the services' key authority and "
        "facts shards unless they set their own), e.g. {'control': 0.001}, to keep them on the "
        "nodes that offer it: a worker the autoscaler removes then holds none of it.",
    )
    swarms: dict[Name, SwarmConfig] = Field(description="Swarms by name.")
    global_memory: MemoryStoreConfig | None = Field(
        None, description="The `global` memory store every agent can reach; None: none."
    )
    ai: AIServiceConfig | None = Field(
        None, description="The OpenAI-compatible AI service `up` deploys on Ray Serve; None: no service."
    )
    facts: FactsServiceConfig | None = Field(
        None,
        description="The facts service `up` deploys on Ray Serve (documents, a temporal knowledge "
        "graph, hybrid and graph search); None: no service.",
    )
    mcp: McpConfig | None = Field(
        None,
        description="MCP: the `/mcp` endpoint every capability is a tool of, and upstream MCP "
        "servers federated as capabilities (run by a swarm `up` adds); None: neither.",
    )
    tracing: TracingConfig = Field(
        default_factory=TracingConfig,
        description="OpenTelemetry traces of each task's way (client, queens, agents, the AI and "
        "facts services, the /mcp endpoint, tool calls, delegation): off by default; the services "
        "trace alike unless they set their own.",
    )

    @field_validator("swarms", mode="before")
    @classmethod
    def _swarm_names(cls, v: Any) -> Any:
        return named(v)

    @model_validator(mode="before")
    @classmethod
    def _services_stay_with_control(cls, data: Any) -> Any:
        # The services' state (keys, the ledger, facts shards) goes where the system's does,
        # unless a service names resources of its own.
        if not isinstance(data, dict) or not data.get("control_resources"):
            return data
        data, wanted = dict(data), data["control_resources"]
        for service in ("ai", "facts"):
            given = data.get(service)
            if isinstance(given, dict) and not given.get("control_resources"):
                data[service] = {**given, "control_resources": wanted}
            elif isinstance(given, (AIServiceConfig, FactsServiceConfig)) and not given.control_resources:
                data[service] = given.model_copy(update={"control_resources": dict(wanted)})
        mcp = data.get("mcp")
        if isinstance(mcp, dict) and mcp.get("server", {}) is not None:  # absent: on, by default
            server = mcp.get("server", {})
            if isinstance(server, dict) and not server.get("control_resources"):
                data["mcp"] = {**mcp, "server": {**server, "control_resources": wanted}}
        return data

    @model_validator(mode="before")
    @classmethod
    def _services_trace_alike(cls, data: Any) -> Any:
        # The services' server spans belong to the system's traces, unless a service says otherwise.
        if not isinstance(data, dict) or not data.get("tracing"):
            return data
        data, wanted = dict(data), data["tracing"]
        for service in ("ai", "facts"):
            given = data.get(service)
            if isinstance(given, dict) and "tracing" not in given:
                data[service] = {**given, "tracing": wanted}
            elif (
                isinstance(given, (AIServiceConfig, FactsServiceConfig))
                and "tracing" not in given.model_fields_set
            ):
                data[service] = given.model_copy(update={"tracing": TracingConfig.model_validate(wanted)})
        mcp = data.get("mcp")  # its endpoint is on by default: absent, it traces alike too
        if (
            isinstance(mcp, dict)
            and isinstance(server := mcp.get("server", {}), dict)
            and "tracing" not in server
        ):
            data["mcp"] = {**mcp, "server": {**server, "tracing": wanted}}
        elif (
            isinstance(mcp, McpConfig)
            and mcp.server is not None
            and "tracing" not in mcp.server.model_fields_set
        ):
            server = mcp.server.model_copy(update={"tracing": TracingConfig.model_validate(wanted)})
            data["mcp"] = mcp.model_copy(update={"server": server})
        return data

    @model_validator(mode="after")
    def _consistent(self) -> SystemConfig:
        if not self.swarms:
            raise ValueError("a system needs at least one swarm")
        # Checks across sections carry their own field paths, which a ValueError here cannot.
        problems = self._journal_problems() + self._heartbeat_problems() + self._service_problems()
        if self.mcp is not None:
            problems += self.mcp.problems(self.swarms) + self._mcp_endpoint_problems()
        if problems:
            raise ConfigError("<config>", problems)
        return self

    def all_swarms(self) -> list[SwarmConfig]:
        """The configured swarms, and the one `up` adds to run federated MCP tools (when
        `mcp.servers` names any)."""
        generated = [self.mcp.swarm()] if self.mcp is not None and self.mcp.servers else []
        return [*self.swarms.values(), *generated]

    def _mcp_endpoint_problems(self) -> list[tuple[str, str]]:
        # Serve has one HTTP proxy per cluster and the system one key authority: the endpoint
        # shares the other services' host, port and keys, at a prefix of its own.
        server = self.mcp.server if self.mcp is not None else None
        if server is None:
            return []
        problems = []
        for name, other in (("ai", self.ai), ("facts", self.facts)):
            if other is None:
                continue
            if (server.host, server.port) != (other.host, other.port):
                why = f"must equal {name}'s ({other.host}:{other.port}): one Serve HTTP endpoint a cluster"
                problems.append(("mcp.server.port", why))
            if server.route_prefix.rstrip("/") == other.route_prefix.rstrip("/"):
                problems.append(("mcp.server.route_prefix", f"is {name}'s too ({other.route_prefix!r})"))
            if server.auth.path != other.auth.path:
                why = f"must equal {name}'s ({other.auth.path!r}): one key authority serves the system"
                problems.append(("mcp.server.auth.path", why))
            break  # facts is checked against ai already
        return problems

    def journal_locations(self) -> dict[str, str]:
        """Where each journal lives, by the field that sets it."""
        out = {
            "registry.journal_uri": journal_location(self.registry.journal_uri, self.namespace, "_registry")
        }
        for swarm in self.swarms.values():
            out[f"swarms.{swarm.name}.journal.uri"] = journal_location(
                swarm.journal.uri, self.namespace, swarm.name
            )
        return out

    def _heartbeat_problems(self) -> list[tuple[str, str]]:
        # A monitor's round pings the agents (up to ping_timeout_s) and then sleeps period_s, so
        # heartbeats can be that far apart; the registry must not find them stale meanwhile.
        stale_s, problems = self.registry.stale_after_s, []
        limit = f"registry.stale_after_s ({stale_s})"
        for swarm in self.swarms.values():
            period_s, ping_s = swarm.health.period_s, swarm.health.ping_timeout_s
            at = f"swarms.{swarm.name}.health"
            if period_s >= stale_s:
                why = f"or the registry never routes to swarm {swarm.name}"
                problems.append((f"{at}.period_s", f"period_s ({period_s}) must be below {limit}, {why}"))
            elif period_s + ping_s >= stale_s:
                why = f"or one hung agent makes swarm {swarm.name} unroutable"
                sum_s = f"({period_s} + {ping_s} s)"
                problems.append(
                    (
                        f"{at}.ping_timeout_s",
                        f"period_s + ping_timeout_s {sum_s} must be below {limit}, {why}",
                    )
                )
        return problems

    def _service_problems(self) -> list[tuple[str, str]]:
        facts, ai = self.facts, self.ai
        if facts is None:
            return []
        problems = []
        if facts.needs_ai() and ai is None and not facts.ai_url:
            (name,) = [n for n, c in facts.namespaces.items() if c.extractor == "llm"][:1]
            why = "extractor llm asks the AI service: configure `ai:` or set facts.ai_url"
            problems.append((f"facts.namespaces.{name}.extractor", why))
        if ai is not None:
            # Serve has one HTTP proxy per cluster: both services sit on it, at different prefixes.
            if (facts.host, facts.port) != (ai.host, ai.port):
                why = f"must equal ai's ({ai.host}:{ai.port}): Serve has one HTTP endpoint per cluster"
                problems.append(("facts.port", why))
            if facts.route_prefix.rstrip("/") == ai.route_prefix.rstrip("/"):
                problems.append(("facts.route_prefix", f"is ai's too ({ai.route_prefix!r})"))
            if facts.auth.path != ai.auth.path:
                why = f"must equal ai's ({ai.auth.path!r}): one key authority serves the system"
                problems.append(("facts.auth.path", why))
        return problems

    def _journal_problems(self) -> list[tuple[str, str]]:
        # Swarms may share a URI (each writes below its own prefix), but no journal may lie in
        # another's: `down` deletes each journal's whole prefix, and replay reads all of it.
        located = self.journal_locations()
        problems = []
        for field, where in located.items():
            for other_field, other in located.items():
                if other_field != field and nested_in(where, other):
                    owner = (
                        "the registry"
                        if other_field.startswith("registry")
                        else f"swarm {other_field.split('.')[1]}"
                    )
                    problems.append((field, f"its journal {where} is inside {owner}'s journal {other}"))
                    break
        return problems


def unset_secrets(config: SystemConfig, environ: dict[str, str]) -> list[tuple[str, str]]:
    """Keys the services will read from the environment and that `environ` lacks: a provider's
    `api_key_env`, the facts service's for the AI service. Found at `swarm up`, not at the first
    request."""
    wanted = []
    if config.ai is not None:
        wanted += [
            (f"ai.providers.{p.name}.api_key_env", p.api_key_env) for p in config.ai.providers.values()
        ]
    if config.facts is not None:
        wanted.append(("facts.api_key_env", config.facts.api_key_env))
    return [(field, f"${var} is not set here") for field, var in wanted if var and var not in environ]


def _problems(err: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] not in {"missing", "extra_forbidden"} and "input" in e:
            shown = repr(e["input"])
            if len(shown) < 80 and shown not in msg:
                msg = f"{msg} (got {shown})"
        problems.append((path, msg))
    return problems


def load_config(source: str | Path | dict | None = None) -> SystemConfig:
    """Loads and validates a system configuration.

    Args:
        source: A YAML file path, an already parsed mapping, or None for SWARMRAY_CONFIG
            (default `configs/local.yaml`).

    Returns:
        The validated configuration, with SWARMRAY_NAMESPACE applied.

    Raises:
        ConfigError: The file is missing or unreadable, or a field is invalid; the message
            names the file, each field path and the reason.
    """
    if isinstance(source, dict):
        name, data = "<dict>", source
    else:
        path = Path(source or env.config_path())
        name = str(path)
        try:
            with path.open() as f:  # from the file, so YAML's errors name it, not "<unicode string>"
                data = yaml.safe_load(f)
        except OSError as e:
            raise ConfigError(name, [("", f"cannot read file: {e.strerror}")]) from e
        except yaml.YAMLError as e:
            raise ConfigError(name, [("", f"not valid YAML: {e}")]) from e
    if not isinstance(data, dict):
        raise ConfigError(name, [("", f"top level must be a mapping, got {type(data).__name__}")])
    if ns := env.namespace():
        data = {**data, "namespace": ns}
    try:
        return SystemConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(name, _problems(e)) from e
    except ConfigError as e:
        raise ConfigError(name, e.problems) from None


def config_changes(old: dict[str, Any], new: dict[str, Any], limit: int = 8) -> list[str]:
    """What differs between two dumped system configs (`model_dump(mode="json", by_alias=True)`):
    swarms added and removed, then each changed field as `path: old -> new`, at most `limit`."""
    out = [f"swarm {n!r} added" for n in sorted(set(new["swarms"]) - set(old.get("swarms", {})))]
    out += [f"swarm {n!r} removed" for n in sorted(set(old.get("swarms", {})) - set(new["swarms"]))]

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if path == "swarms" and (key not in a or key not in b):
                    continue  # whole swarms are listed above
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        elif a != b:
            out.append(f"{path}: {json.dumps(_shown(a))} -> {json.dumps(_shown(b))}")

    walk(old, new, "")
    return out[:limit] + ([f"and {len(out) - limit} more"] if len(out) > limit else [])


def _shown(value: Any) -> Any:
    """A config value fit for a message: a URI without its credentials (`redact_uri`)."""
    return redact_uri(value) if isinstance(value, str) else value
