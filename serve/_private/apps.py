"""Application builders for Serve config files: `import_path: serve:ai_app` (or `serve:facts_app`)
with `args:` that Serve validates against the builder's pydantic model before building.

A file deployed with `serve deploy` (or a KubeRay RayService's `serveConfigV2`) runs the same
applications `swarm up` deploys. `serve build` cannot write such a file, as it only accepts an
`Application`, not a builder (ray-project/ray#37819): `configs/serve.yaml` is written by hand.
"""

# No `from __future__ import annotations` here: Serve validates `args` only when the builder's
# parameter annotation is a class, and that import would turn it into a string.

from typing import Any

from pydantic import Field, model_validator

from models._private.core.config import Name
from serve._private.ai.config import AIServiceConfig
from serve._private.auth.config import AuthConfig
from serve._private.facts.config import FactsServiceConfig
from serve._private.service import build_app, build_facts_app

__all__ = ["AIAppArgs", "FactsAppArgs", "ai_app", "facts_app"]

# Serve's `http_options` and each application's `route_prefix` say where a file's applications
# listen; the service configs' own fields for that would be silently ignored.
_SET_BY_THE_FILE = ("host", "port", "route_prefix")
_SYSTEM = Field(
    "swarmray",
    description="The system (Ray namespace) whose key authority checks the keys, and under "
    "which the service keeps its data: the `namespace` of the system config that uses it.",
)


def _file_args(args: Any) -> None:
    if given := [f for f in _SET_BY_THE_FILE if f in args.model_fields_set]:
        raise ValueError(
            f"{', '.join(given)}: set by the Serve config file (http_options, the application's "
            "route_prefix), not in args"
        )
    if not args.auth.enabled:
        # The application cannot see where the file makes Serve listen (0.0.0.0 by default).
        raise ValueError("auth.enabled false is refused in a Serve config file")


class AIAppArgs(AIServiceConfig):
    """`args` of `serve:ai_app`: the AI service's config (as under `ai:` in a system config,
    without host, port and route_prefix) and the system it serves."""

    system: Name = _SYSTEM

    @model_validator(mode="after")
    def _from_a_file(self) -> "AIAppArgs":
        _file_args(self)
        return self

    def service(self) -> AIServiceConfig:
        """The service's own config."""
        return AIServiceConfig.model_validate(self.model_dump(exclude={"system"}))


class FactsAppArgs(FactsServiceConfig):
    """`args` of `serve:facts_app`: the facts service's config (as under `facts:` in a system
    config, without host, port and route_prefix; `ai_url` must be given for llm extraction) and
    the system it serves."""

    system: Name = _SYSTEM

    @model_validator(mode="after")
    def _from_a_file(self) -> "FactsAppArgs":
        _file_args(self)
        if self.needs_ai() and not self.ai_url:
            raise ValueError("a namespace with extractor llm needs ai_url (the AI service's …/v1)")
        return self

    def service(self) -> FactsServiceConfig:
        """The service's own config."""
        return FactsServiceConfig.model_validate(self.model_dump(exclude={"system"}))


def _authority(
    system: str, auth: AuthConfig, resources: dict[str, float], models: list[str] | None = None
) -> None:
    import ray

    from serve._private.auth.authority import get_authority

    # Serve builds the application in a Ray task: the authority is up before any gateway asks.
    authority = get_authority(system, auth, resources)
    ray.get(authority.list.remote())
    if models is not None:  # the AI service's: what a new key's model list may name
        ray.get(authority.set_served_models.remote(models))


def ai_app(args: AIAppArgs) -> Any:
    """The AI service as a Serve application, for `import_path: serve:ai_app` in a Serve config
    file; `args` are checked against `AIAppArgs`."""
    config = args.service()
    _authority(args.system, args.auth, args.control_resources, config.model_names())
    return build_app(config, args.system)


def facts_app(args: FactsAppArgs) -> Any:
    """The facts service as a Serve application, for `import_path: serve:facts_app` in a Serve
    config file; `args` are checked against `FactsAppArgs`."""
    _authority(args.system, args.auth, args.control_resources)
    return build_facts_app(args.service(), args.system)
