"""JSON Schemas a completion is constrained to: `check_schema` refuses one that cannot be used.

Stand-in for the engine branch of issue 27 (dropped at merge): it checks the schema's
meta-validity and its size only.
"""

from __future__ import annotations

import json
from typing import Any

from models._private.core.errors import RequestError

__all__ = ["MAX_SCHEMA_CHARS", "check_schema"]

MAX_SCHEMA_CHARS = 100_000  # of a schema's canonical JSON


def check_schema(schema: dict[str, Any], param: str) -> None:
    """Raises `RequestError(param, reason)` for a schema that is not valid JSON Schema or is too large."""
    import jsonschema

    if not isinstance(schema, dict):
        raise RequestError(param, "is not a JSON Schema object")
    try:
        size = len(json.dumps(schema, sort_keys=True))
        if size > MAX_SCHEMA_CHARS:
            raise RequestError(param, f"the schema is {size} characters long; at most {MAX_SCHEMA_CHARS}")
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        raise RequestError(param, f"is not a valid JSON Schema: {e.message}") from None
    except (RecursionError, ValueError, TypeError) as e:
        if isinstance(e, RequestError):
            raise
        raise RequestError(param, "is not a valid JSON Schema") from None
