"""The OpenAI API's shapes as the gateway speaks them: request bodies (fields the API defines;
unknown ones are ignored, as vLLM does) and the pieces of responses (the error body is in
`serve/_private/http_errors.py`, both services'.)"""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.

import base64
import json
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from models._private.engines.base import SEED_MAX, SEED_MIN, SamplingParams

__all__ = [
    "ChatBody",
    "CompletionBody",
    "EmbeddingBody",
    "Message",
    "RequestBody",
    "SamplingBody",
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


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[TextPart]  # plain text, or OpenAI's list of text parts

    def plain(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": self.role, "content": text}


class ChatBody(SamplingBody):
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)

    @field_validator("messages")
    @classmethod
    def _prompt_size(cls, messages: list[Message]) -> list[Message]:
        size = sum(len(m.plain()["content"]) for m in messages)
        if size > MAX_PROMPT_CHARS:
            raise ValueError(f"the messages hold {size} characters; at most {MAX_PROMPT_CHARS}")
        return messages

    max_completion_tokens: int | None = Field(None, gt=0)


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


def choice(chat: bool, text: str, finish: str | None, *, stream: bool = False, first: bool = False) -> dict:
    """One entry of `choices`: a chat message (or a stream's delta, with the role on its first
    piece), or a text completion."""
    if not chat:
        return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
    content: dict[str, str] = (
        {"role": "assistant", "content": text} if first or not stream else {"content": text}
    )
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
