"""What every package's configuration models share: the base class, name types, mapping keys
as names, and agent classes named by import path."""

from __future__ import annotations

import importlib
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints

__all__ = ["CapabilityFamily", "CapabilityName", "ConfigModel", "Name", "import_object", "named"]

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
"""A swarm, pool or namespace name."""

CapabilityName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")]
"""A dotted capability name, e.g. 'text.stats'."""

CapabilityFamily = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*\.\*$")]
"""A family of capabilities, offered as one: a dotted prefix and `.*`, e.g. 'mcp.everything.*'
covers 'mcp.everything.echo' (see `names.capability_offered`)."""


class ConfigModel(BaseModel):
    """Base of every configuration model: unknown fields are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def named(v: Any) -> Any:
    """A `mode="before"` validator body for `dict[name, Model]` fields: each mapping key becomes
    its entry's `name`, and a `name` written inside an entry must agree with its key."""
    if not isinstance(v, dict):
        return v
    out = {}
    for key, item in v.items():
        if isinstance(item, dict):
            if "name" in item and item["name"] != key:
                raise ValueError(f"entry {key!r} has a different name {item['name']!r}")
            item = {**item, "name": key}
        out[key] = item
    return out


def import_object(path: str) -> Any:
    """Imports `package.module:Name` and returns the object."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{path!r} is not an import path of the form 'package.module:Name'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import module {module_name!r}: {e}") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj
