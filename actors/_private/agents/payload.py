"""Task payloads checked against the pydantic models agents declare, before anything runs.

An agent declares `payloads = {"text.stats": TextInput}`; the queen checks a task of that
capability when it is submitted (a bad one is refused there and then), and the host hands
`handle` the checked payload, with defaults filled in. A payload error is permanent: the same
input fails the same way on every agent, so it is never retried.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from models._private.core.config import import_object
from models._private.core.errors import MemoryInputError, PayloadError, RequestError

__all__ = ["PERMANENT", "check_payload", "payload_error", "payload_models"]

# Errors that say the input is wrong, not the agent: retrying cannot help. RequestError: a
# service (AI, facts) refused the request with a 4xx.
PERMANENT = (PayloadError, MemoryInputError, RequestError)


def payload_models(class_paths: Iterable[tuple[str, Iterable[str]]]) -> dict[str, type[BaseModel]]:
    """Capability -> payload model, from (agent class path, capabilities it serves) pairs."""
    models: dict[str, type[BaseModel]] = {}
    for class_path, capabilities in class_paths:
        declared: Mapping[str, type[BaseModel]] = getattr(import_object(class_path), "payloads", {})
        models.update((cap, declared[cap]) for cap in capabilities if cap in declared)
    return models


def check_payload(model: type[BaseModel] | None, capability: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as `model` reads it (defaults filled in); unchanged when there is no model.

    Raises:
        PayloadError: naming each field that does not fit and why.
    """
    if model is None:
        return payload
    try:
        return model.model_validate(payload).model_dump(by_alias=True)
    except ValidationError as e:
        raise payload_error(capability, e) from None


def payload_error(capability: str, error: ValidationError) -> PayloadError:
    """A pydantic validation error as a PayloadError with one (field path, reason) per problem."""
    problems = []
    for err in error.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"])
        reason = err["msg"].removeprefix("Value error, ")  # a validator's own message
        if err["type"] == "extra_forbidden":
            reason = "unknown field"
        elif err["type"] == "missing":
            reason = "required"
        problems.append((field, reason))
    return PayloadError(capability, problems)
