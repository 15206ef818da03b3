"""The OpenAI API's shapes as the gateway speaks them: request bodies (fields the API defines;
unknown ones are ignored, as vLLM does) and the pieces of responses (the error body is in
`serve/_private/http_errors.py`, both services'.)"""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.

import base64
import json
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models._private.core.errors import RequestError
from models._private.engines import grammar
from models._private.engines.base import SEED_MAX, SEED_MIN, SamplingParams
from models._private.engines.tool_calls import named_tool_schema, required_tool_schema

__all__ = [
    "ChatBody",
    "CompletionBody",
    "EmbeddingBody",
    "Message",
    "RequestBody",
    "ResponseFormat",
    "SamplingBody",
    "Tool",
    "ToolCall",
    "choice",
    "encode_vector",
    "sse_event",
    "usage_of",
]


# Input limits, checked when a body is read, before anything is tokenized. OpenAI documents
# 4 stop sequences and 2,048 embedding inputs; the others bound what one request may ask.
MAX_MESSAGES = 1000
MAX_PROMPT_CHARS = 1_000_000  # a prompt, or all of a chat's messages together
MAX_STOP = 4
MAX_STOP_CHARS = 500
MAX_USER_CHARS = 256
MAX_EMBEDDING_INPUTS = 2048
MAX_EMBEDDING_CHARS = 100_000  # one input; the embedder reads far fewer tokens and refuses more
# Tools, as OpenAI bounds them (128 tools, names of 64 characters), and what their schemas may
# take altogether (each is bounded again when its grammar is checked).
MAX_TOOLS = 128
TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
MAX_DESCRIPTION_CHARS = 10_000
MAX_TOOLS_CHARS = 1_000_000  # all of a request's tools (or its response format), as JSON
MAX_TOOL_CALLS = 128  # in one assistant message
MAX_ID_CHARS = 256  # a tool call's id


class RequestBody(BaseModel):
    """Fields every request has."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(max_length=256)
    user: str | None = Field(None, max_length=MAX_USER_CHARS)


class SamplingBody(RequestBody):
    max_tokens: int | None = Field(None, gt=0)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    n: int = Field(1, ge=1, le=1, description="One choice per request.")
    stream: bool = False
    stream_options: dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_size(cls, stop: str | list[str] | None) -> str | list[str] | None:
        many = [stop] if isinstance(stop, str) else stop or []
        if len(many) > MAX_STOP:
            raise ValueError(f"{len(many)} stop sequences; at most {MAX_STOP}")
        if any(len(x) > MAX_STOP_CHARS for x in many):
            raise ValueError(f"a stop sequence is longer than {MAX_STOP_CHARS} characters")
        return stop

    def params(self, default_max_tokens: int | None) -> dict[str, Any]:
        """Sampling parameters; `default_max_tokens` None leaves the length to the context."""
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(
            max_tokens=self.max_tokens or default_max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=stop,
            seed=self.seed,
        ).model_dump()


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class CalledFunction(BaseModel):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    arguments: str = Field(description="The arguments, as a JSON string.")


class ToolCall(BaseModel):
    """A tool call of an earlier assistant message."""

    id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    type: Literal["function"] = "function"
    function: CalledFunction


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    # Plain text, or OpenAI's list of text parts; null in an assistant message with tool calls.
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | None = Field(None, max_length=MAX_TOOL_CALLS)
    tool_call_id: str | None = Field(None, min_length=1, max_length=MAX_ID_CHARS)

    @model_validator(mode="after")
    def _fits_its_role(self) -> "Message":
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only an assistant message has tool_calls")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required, unless an assistant message has tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("a tool message, and only one, has a tool_call_id")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

    def openai(self) -> dict[str, Any]:
        """The message as OpenAI's API and an engine take it: text content, and its tool calls
        or the call it answers."""
        message: dict[str, Any] = {"role": self.role, "content": self.text()}
        if self.tool_calls:
            message["content"] = self.text() or None
            message["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message

    def size(self) -> int:
        """Characters of text it holds: content, and its tool calls' arguments."""
        return len(self.text()) + sum(len(c.function.arguments) for c in self.tool_calls or [])


class FunctionDefinition(BaseModel):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS)
    parameters: dict[str, Any] | None = Field(
        None, description="A JSON Schema of the arguments; none is an empty object."
    )
    strict: bool | None = None


class Tool(BaseModel):
    """A function the model may call."""

    type: Literal["function"]
    function: FunctionDefinition


class ChosenFunction(BaseModel):
    name: str = Field(pattern=TOOL_NAME_PATTERN)


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: ChosenFunction


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS)
    json_schema: dict[str, Any] = Field(alias="schema", description="The JSON Schema of the answer.")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """What the answer's content is: text, any JSON object, or JSON matching a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = Field(None, description="With type json_schema: the schema.")


ToolMode = Literal["none", "auto", "required", "named"]


class ChatBody(SamplingBody):
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)

    @field_validator("messages")
    @classmethod
    def _prompt_size(cls, messages: list[Message]) -> list[Message]:
        size = sum(m.size() for m in messages)
        if size > MAX_PROMPT_CHARS:
            raise ValueError(f"the messages hold {size} characters; at most {MAX_PROMPT_CHARS}")
        return messages

    max_completion_tokens: int | None = Field(None, gt=0)
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description="none, auto (the default with tools), required, or a named function."
    )
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None

    @field_validator("tools", "response_format")
    @classmethod
    def _schemas_size(cls, value: Any) -> Any:
        if value is None:
            return value
        size = len(json.dumps(value if isinstance(value, dict) else _dumped(value)))
        if size > MAX_TOOLS_CHARS:
            raise ValueError(f"{size} characters of JSON; at most {MAX_TOOLS_CHARS}")
        return value

    def tool_mode(self) -> ToolMode:
        """How the tools are used: not at all, at the model's choice, or forced (any or one)."""
        if isinstance(self.tool_choice, NamedToolChoice):
            return "named"
        return self.tool_choice or ("auto" if self.tools else "none")

    def tools_dumped(self) -> list[dict[str, Any]]:
        return [t.model_dump(exclude_none=True) for t in self.tools or []]

    def checked_json_schema(self) -> dict[str, Any] | None:
        """What the completion is constrained to (`SamplingParams.json_schema`), after the
        checks that need more than one field or a schema's meaning; a bad one raises
        `RequestError` naming the field. A `json_schema` format constrains whether or not it
        is `strict`: the schema is there to be followed."""
        tools, mode = self.tools_dumped(), self.tool_mode()
        seen: set[str] = set()
        for i, tool in enumerate(tools):
            name = tool["function"]["name"]
            if name in seen:
                raise RequestError(f"tools.{i}.function.name", f"the function {name!r} is declared twice")
            seen.add(name)
            if "parameters" in tool["function"]:
                grammar.check_schema(tool["function"]["parameters"], f"tools.{i}.function.parameters")
        if mode in ("required", "named") and not tools:
            raise RequestError("tool_choice", f"tool_choice {mode!r} needs tools")
        if mode == "named" and self.tool_choice.function.name not in seen:  # type: ignore[union-attr]
            raise RequestError(
                "tool_choice",
                f"the function {self.tool_choice.function.name!r} is not in tools",  # type: ignore[union-attr]
            )
        self._check_tool_results()
        if mode == "required":
            return required_tool_schema(tools, self.parallel_tool_calls)
        if mode == "named":
            return named_tool_schema(tools, self.tool_choice.function.name)  # type: ignore[union-attr]
        return self._format_schema()

    def _format_schema(self) -> dict[str, Any] | None:
        form = self.response_format
        if form is None or form.type == "text":
            return None
        if form.type == "json_object":
            return {"type": "object"}
        if form.json_schema is None:
            raise RequestError("response_format.json_schema", "is required with type 'json_schema'")
        grammar.check_schema(form.json_schema.json_schema, "response_format.json_schema.schema")
        return form.json_schema.json_schema

    def _check_tool_results(self) -> None:
        # A tool result answers a call an earlier assistant message made, as OpenAI requires.
        called: set[str] = set()
        for i, m in enumerate(self.messages):
            called.update(c.id for c in m.tool_calls or [])
            if m.role == "tool" and m.tool_call_id not in called:
                raise RequestError(
                    f"messages.{i}.tool_call_id", "answers no tool call of an earlier assistant message"
                )

    def payload(self) -> dict[str, Any]:
        """What the gateway asks a backend for this chat (`ModelServer.complete`'s request):
        the messages, the sampling params with the constraint, the tools the template renders
        (not with tool_choice none), and for a remote provider the fields as they came.

        Raises:
            RequestError: a bad tool, tool choice or format (`checked_json_schema`).
        """
        max_tokens = self.max_completion_tokens or self.max_tokens
        params = self.model_copy(update={"max_tokens": max_tokens}).params(None)
        params["json_schema"] = self.checked_json_schema()
        # Without max_tokens a chat completion may fill the context, as vLLM's server does.
        payload: dict[str, Any] = {"messages": [m.openai() for m in self.messages], "params": params}
        if self.tool_mode() != "none":  # a model server renders them (not with tool_choice none)
            payload["tools"] = self.tools_dumped()
        if openai_fields := self.openai_fields():  # a remote provider gets them as they came
            payload["openai"] = openai_fields
        return payload

    def openai_fields(self) -> dict[str, Any]:
        """The tool and format fields as the client sent them, for a remote provider."""
        return self.model_dump(
            include={"tools", "tool_choice", "parallel_tool_calls", "response_format"},
            exclude_none=True,
            by_alias=True,
            exclude_unset=True,
        )


def _dumped(value: Any) -> Any:
    if isinstance(value, list):
        return [_dumped(v) for v in value]
    return value.model_dump(by_alias=True, exclude_none=True) if isinstance(value, BaseModel) else value


class CompletionBody(SamplingBody):
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)


class EmbeddingBody(RequestBody):
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"  # the openai client asks for base64

    @field_validator("input")
    @classmethod
    def _input_size(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"{len(texts)} inputs; at most {MAX_EMBEDDING_INPUTS}")
        if any(len(t) > MAX_EMBEDDING_CHARS for t in texts):
            raise ValueError(f"an input is longer than {MAX_EMBEDDING_CHARS} characters")
        return value


def choice(
    chat: bool,
    text: str | None,
    finish: str | None,
    *,
    stream: bool = False,
    first: bool = False,
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict:
    """One entry of `choices`: a chat message (or a stream's delta, with the role on its first
    piece; `tool_calls` then are deltas), or a text completion."""
    if not chat:
        return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
    content: dict[str, Any] = (
        {"role": "assistant", "content": text} if first or not stream else {"content": text}
    )
    if tool_calls:
        content["tool_calls"] = tool_calls
    return {"index": 0, "delta" if stream else "message": content, "finish_reason": finish}


def usage_of(out: dict[str, Any]) -> dict[str, int]:
    p, c = out["prompt_tokens"], out["completion_tokens"]
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def encode_vector(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


def sse_event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"
