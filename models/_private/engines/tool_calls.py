"""Tool calls as JSON Schemas: what a completion must match when a request's `tool_choice` is
`required` or names a function.

Both engines constrain decoding to a JSON Schema (`SamplingParams.json_schema`), so a forced
tool call is a schema like any other. The shapes are vLLM's (its OpenAI server builds the same
ones), so that the transformers and the vLLM engine answer alike:

- `required`: an array of one or more `{"name": <a tool's name>, "parameters": <its arguments>}`
  (one at most when parallel tool calls are off);
- a named function: the function's arguments object itself.

It also holds what a model whose chat template cannot take tools needs (`fallback_messages`:
the tools listed in a system message, asking for Hermes' `<tool_call>` blocks; tool calls and
results turned into plain messages), and the parsing of tool calls out of a completion
(`parse_tool_calls`, `ToolCallStream` for a stream, `forced_tool_calls` for a constrained one).
Everything here is pure: no model, no I/O.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

__all__ = [
    "TOOL_CALL_CLOSE",
    "TOOL_CALL_OPEN",
    "ToolCallStream",
    "fallback_messages",
    "forced_tool_calls",
    "named_tool_schema",
    "new_tool_call",
    "parse_tool_calls",
    "plain_tool_messages",
    "required_tool_schema",
    "tool_parameters",
    "tool_prompt",
]

TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"  # Hermes' format, as Qwen's templates use
_BLOCK = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)" + re.escape(TOOL_CALL_CLOSE), re.DOTALL)

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


# -- rendering for a chat template that cannot take tools --------------------------------------


def tool_prompt(tools: list[dict[str, Any]]) -> str:
    """The system message that offers `tools` to a model whose template cannot render them."""
    listed = "\n".join(
        json.dumps(
            {
                "name": tool["function"]["name"],
                "description": tool["function"].get("description") or "",
                "parameters": tool_parameters(tool),
            }
        )
        for tool in tools
    )
    return (
        "You may call functions to help with the user's request. The functions, one JSON object "
        f"a line:\n<tools>\n{listed}\n</tools>\nTo call one, answer with a JSON object holding its "
        f"name and its arguments in {TOOL_CALL_OPEN}{TOOL_CALL_CLOSE} tags, one call a block:\n"
        f"{TOOL_CALL_OPEN}\n"
        '{"name": "<function name>", "arguments": {<its arguments>}}\n'
        f"{TOOL_CALL_CLOSE}\n"
        "Otherwise, answer as usual."
    )


def plain_tool_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """`messages` as plain {role, content} ones: an assistant's tool calls become `<tool_call>`
    blocks after its text, and a tool result a user message holding a `<tool_response>` block
    (a role `tool` is one that many templates refuse or drop)."""
    plain = []
    for m in messages:
        content = m.get("content") or ""
        if m.get("tool_calls"):
            blocks = [
                TOOL_CALL_OPEN
                + json.dumps(
                    {"name": c["function"]["name"], "arguments": _loaded(c["function"]["arguments"])}
                )
                + TOOL_CALL_CLOSE
                for c in m["tool_calls"]
            ]
            content = "\n".join([content, *blocks] if content else blocks)
        if m["role"] == "tool":
            plain.append({"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"})
        else:
            plain.append({"role": m["role"], "content": content})
    return plain


def fallback_messages(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> list[dict[str, str]]:
    """`messages` for a template that cannot take tools: plain ones (`plain_tool_messages`),
    with `tools` offered in the system message (`tool_prompt`, after the caller's own system
    text when there is one)."""
    plain = plain_tool_messages(messages)
    if not tools:
        return plain
    offer = tool_prompt(tools)
    if plain and plain[0]["role"] == "system":
        return [{"role": "system", "content": plain[0]["content"] + "\n\n" + offer}, *plain[1:]]
    return [{"role": "system", "content": offer}, *plain]


def _loaded(arguments: str) -> Any:
    # An assistant message's arguments are a JSON string; one that is not JSON stays a string.
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


# -- parsing tool calls out of a completion ----------------------------------------------------


def new_tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI tool call with a fresh id (`call_` and 24 hex digits, as OpenAI's are long)."""
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def _call_of(text: str, names: set[str]) -> dict[str, Any] | None:
    """The tool call one block's text holds ({"name", "arguments"}, "parameters" also taken, as
    some models write), or None when it is not one of a known function."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("name") not in names:
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        arguments = _loaded(arguments)
    if not isinstance(arguments, dict):
        return None
    return new_tool_call(data["name"], arguments)


def parse_tool_calls(text: str, names: set[str]) -> tuple[str | None, list[dict[str, Any]]]:
    """The content and the tool calls of a completion with `tool_choice: auto`.

    A call is a `<tool_call>` block holding a JSON object with the name of one of the functions
    `names` and its arguments, or the whole completion being such an object. A block that is
    not one (bad JSON, an unknown function) stays in the content as it was written. The content
    is None when nothing but calls is left.
    """
    calls: list[dict[str, Any]] = []

    def take(match: re.Match[str]) -> str:
        call = _call_of(match.group(1), names)
        if call is None:
            return match.group(0)
        calls.append(call)
        return ""

    content = _BLOCK.sub(take, text)
    if not calls and (bare := _call_of(text.strip(), names)) is not None:
        return None, [bare]
    content = content.strip() if calls else content
    return (content or None), calls


def forced_tool_calls(text: str, name: str | None) -> list[dict[str, Any]] | None:
    """The tool calls of a completion constrained by `required_tool_schema` (`name` None) or by
    `named_tool_schema(tools, name)`; None when it does not have that shape (cut by max_tokens,
    or an engine that did not constrain it)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if name is not None:
        return [new_tool_call(name, data)] if isinstance(data, dict) else None
    if not isinstance(data, list) or not data:
        return None
    calls = []
    for item in data:
        if not (isinstance(item, dict) and isinstance(item.get("name"), str)):
            return None
        parameters = item.get("parameters", {})
        if not isinstance(parameters, dict):
            return None
        calls.append(new_tool_call(item["name"], parameters))
    return calls


class ToolCallStream:
    """`parse_tool_calls` over a stream: `feed` gives back the text that is surely content (it
    holds back what may be the start of a `<tool_call>` block, or of a completion that is one
    JSON object), and `finish` parses what was held back.

    Plain content streams as it comes; from the first `<tool_call>` (or a completion that opens
    with `{`) to the end, the text is held and parsed whole.
    """

    def __init__(self, names: set[str]):
        self.names = names
        self._held = ""
        self._sent_any = False

    def feed(self, text: str) -> str:
        self._held += text
        if not self._sent_any and self._held.lstrip().startswith("{"):
            return ""  # maybe a bare call: held to the end
        at = self._held.find(TOOL_CALL_OPEN)
        if at >= 0:
            safe, self._held = self._held[:at], self._held[at:]
        else:
            # Keep a tail that may be the start of the opening tag.
            keep = next(
                (
                    n
                    for n in range(min(len(TOOL_CALL_OPEN) - 1, len(self._held)), 0, -1)
                    if self._held.endswith(TOOL_CALL_OPEN[:n])
                ),
                0,
            )
            if not self._sent_any and not self._held.strip():
                return ""  # leading white space: wait for what follows
            cut = len(self._held) - keep
            safe, self._held = self._held[:cut], self._held[cut:]
        self._sent_any = self._sent_any or bool(safe)
        return safe

    def finish(self) -> tuple[str | None, list[dict[str, Any]]]:
        """The rest of the content (None when there is none) and the tool calls."""
        held, self._held = self._held, ""
        if not self._sent_any:
            return parse_tool_calls(held, self.names)
        content, calls = parse_tool_calls(held, self.names) if TOOL_CALL_OPEN in held else (held, [])
        return (content or None), calls
