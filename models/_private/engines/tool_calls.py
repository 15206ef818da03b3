"""Tool calls as JSON Schemas: what a completion must match when a request's `tool_choice` is
`required` or names a function.

Both engines constrain decoding to a JSON Schema (`SamplingParams.json_schema`), so a forced
tool call is a schema like any other. The shapes are vLLM's (its OpenAI server builds the same
ones), so that the transformers and the vLLM engine answer alike:

- `required`: an array of one or more `{"name": <a tool's name>, "parameters": <its arguments>}`
  (one at most when parallel tool calls are off);
- a named function: the function's arguments object itself.
"""

from __future__ import annotations

from typing import Any

__all__ = ["named_tool_schema", "required_tool_schema", "tool_parameters"]

# A function declared without parameters takes an empty object, as OpenAI reads it.
_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def tool_parameters(tool: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of a function tool's arguments (`{"type": "function", "function": {...}}`)."""
    return tool["function"].get("parameters") or _NO_PARAMETERS


def required_tool_schema(tools: list[dict[str, Any]], parallel: bool = True) -> dict[str, Any]:
    """The schema of a completion that must call one of `tools` (several when `parallel`)."""
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": [tool["function"]["name"]]},
                "parameters": tool_parameters(tool),
            },
            "required": ["name", "parameters"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": calls}}
    if not parallel:
        schema["maxItems"] = 1
    return schema


def named_tool_schema(tools: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The schema of a completion that must be the arguments of the function `name`."""
    for tool in tools:
        if tool["function"]["name"] == name:
            return tool_parameters(tool)
    raise KeyError(name)
