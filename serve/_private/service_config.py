"""What the AI service's and the facts service's configs share: the HTTP endpoint Serve listens
on, the API keys (`auth`), the resources of their state-holding actors (`control_resources`),
and the check that auth is off only on loopback."""

from __future__ import annotations

from typing import Any

from pydantic import Field, PositiveInt, model_validator

from models._private.core.config import ConfigModel
from serve._private.auth.config import AuthConfig, check_auth_host

__all__ = ["ServiceConfig", "auth_field", "control_resources_field"]


class ServiceConfig(ConfigModel):
    """The base of each service's config: where it listens, and auth off only on loopback.

    A subclass declares `auth` (`auth_field()`) and `control_resources`
    (`control_resources_field(...)`) where its fields list them, so that each config keeps
    its own order of fields.
    """

    host: str = Field("127.0.0.1", description="Serve's HTTP host; 0.0.0.0 to listen on every interface.")
    port: PositiveInt = Field(8000, description="Serve's HTTP port.")
    route_prefix: str = Field("/", description="Where the API sits under Serve's HTTP root.")

    @model_validator(mode="after")
    def _auth_off_on_loopback_only(self) -> ServiceConfig:
        check_auth_host(self.auth, self.host)
        return self


def auth_field() -> Any:
    """A service config's `auth` field."""
    return Field(default_factory=AuthConfig, description="API keys, scopes, limits and the audit trail.")


def control_resources_field(actors: str) -> Any:
    """A service config's `control_resources` field; `actors` names its state-holding actors."""
    return Field(
        default_factory=dict,
        description=f"Custom Ray resources the service's state-holding actors ask for ({actors}), "
        "e.g. {control: 0.001}, to keep them on the nodes that offer it; in a system config, the "
        "system's `control_resources` unless set here.",
    )
