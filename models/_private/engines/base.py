"""The inference-engine interface, its configuration, and `resolve_engine_kind` (engine: auto).

The implementations (the transformers and the vLLM engine) build on this module, and
`create_engine` in `factory.py` picks one of them; this module imports neither, so that imports
run one way.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import importlib.util
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveInt

from models._private.core.config import ConfigModel
from models._private.core.errors import EngineUnavailableError, RequestError

__all__ = [
    "INLINE_PROMPT_CHARS",
    "SEED_MAX",
    "SEED_MIN",
    "Delta",
    "Engine",
    "EngineConfig",
    "Generation",
    "SamplingParams",
    "off_the_loop_if_long",
    "resolve_engine_kind",
]

T = TypeVar("T")
_PROBE_TOOL = "swarmray_probe_tool_7f3a"  # a function name no chat template holds
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1  # what torch.Generator.manual_seed accepts


class EngineConfig(ConfigModel):
    """Which engine runs a model, and its arguments."""

    kind: Literal["auto", "vllm", "transformers"] = Field(
        "auto", description="'auto' is vLLM when it is importable and a GPU is visible, else transformers."
    )
    dtype: str = Field("auto", description="Weights' dtype: auto, float16, bfloat16, float32.")
    max_model_len: PositiveInt | None = Field(
        None, description="Longest prompt plus completion, in tokens; None is the model's own limit."
    )
    tensor_parallel_size: PositiveInt = Field(1, description="GPUs one replica shards the model over (vLLM).")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="Share of each GPU's memory vLLM may take."
    )
    torch_threads: PositiveInt | None = Field(
        None,
        description="Threads torch computes with on a CPU (transformers); None: the node's cores "
        "(Ray caps the threads of an actor of num_cpus 0 or 1 at one, which halves a 2-core "
        "node's tokens per second).",
    )
    max_batch_size: PositiveInt = Field(
        32,
        description="Requests that share forward passes (transformers; vLLM batches on its own). "
        "On 2 CPU cores 32 rows decode 1.4 times the tokens a second of 8 on SmolLM2-135M and 64 "
        "no more than 32 (benchmarks/README.md, fleet); a row's KV cache grows with its tokens, "
        "so a large model on a small host may want fewer.",
    )
    batching: Literal["continuous", "static"] = Field(
        "continuous",
        description="Transformers: 'continuous' lets a request join the running batch at its next "
        "step and a finished row leave it at once; 'static' decodes the requests queued when a "
        "batch starts together, and later ones wait for the batch to end.",
    )
    prefill_tokens_per_step: PositiveInt = Field(
        1024,
        description="Continuous batching: prompt tokens of requests joining a running batch that "
        "one step prefills (at least one request), so that long prompts stall its decoding in "
        "bounded slices.",
    )
    batch_wait_ms: NonNegativeFloat = Field(
        0.0,
        description="How long the transformers engine waits to gather a batch when it has none "
        "running; 0 takes what is queued (with continuous batching, later requests join at the "
        "next step; with static batching, they form the next batch).",
    )
    batch_refill: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Static batching only: after a batch of n requests, the next one waits up to "
        "this share of that batch's duration until n requests are queued: callers a batch "
        "answered come back milliseconds apart over HTTP, and a batch that started with the "
        "first of them would keep the rest waiting its whole length. 0 turns it off; one caller "
        "at a time never waits.",
    )
    device: str | None = Field(None, description="Transformers device; None picks a GPU if visible.")
    trust_remote_code: bool = Field(False, description="Run model code shipped with the weights.")
    vllm_args: dict[str, Any] = Field(
        default_factory=dict, description="More vLLM engine arguments, passed as they are."
    )


# Up to this many characters a prompt is rendered and tokenized on the event loop: that takes
# 0.3 ms a thousand characters here, less than a hop to a thread, and requests that arrive
# together still meet in one batch. A longer prompt would stall every request on the loop.
INLINE_PROMPT_CHARS = 2000


async def off_the_loop_if_long(chars: int, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)`, which reads a text of `chars` characters; in a thread when it is long."""
    if chars <= INLINE_PROMPT_CHARS:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


class SamplingParams(BaseModel):
    """How to sample a completion."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: PositiveInt | None = Field(
        16, description="Most tokens to generate; None: as many as the context holds after the prompt."
    )
    temperature: float = Field(1.0, ge=0, le=2, description="0 is greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    stop: list[str] = Field(default_factory=list, description="Strings that end the completion.")
    seed: int | None = Field(
        None, ge=SEED_MIN, le=SEED_MAX, description="Makes sampling repeatable (64 bits, as torch takes)."
    )
    json_schema: dict[str, Any] | None = Field(
        None,
        description='The completion is JSON matching this JSON Schema; {"type": "object"} is any JSON '
        "object. Engines constrain decoding to it (see `grammar.check_schema` for what is refused).",
    )


@dataclass
class Generation:
    """A finished completion and its token counts."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"


@dataclass
class Delta:
    """A piece of a streamed completion; the last one has `finish_reason` and the counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Engine(abc.ABC):
    """One loaded model that generates text.

    Attributes:
        max_model_len: Longest prompt plus completion, in tokens.
        tokenizer: The model's Hugging Face tokenizer.
        batch_rows: Requests the engine decodes at once when it caps them itself (more wait in
            its queue); None when it admits every request at once (vLLM schedules on its own).
    """

    max_model_len: int
    tokenizer: Any
    batch_rows: int | None = None

    def count_tokens(self, prompt: str, *, chat: bool = False) -> int:
        """Tokens `prompt` takes (a chat prompt already carries its special tokens)."""
        return len(self._encode(prompt, chat))

    def _encode(self, prompt: str, chat: bool) -> list[int]:
        # A chat prompt carries its special tokens from the template already.
        return self.tokenizer(prompt, add_special_tokens=not chat)["input_ids"]

    async def _tokens_and_params(
        self, prompt: str, params: SamplingParams, chat: bool
    ) -> tuple[list[int], SamplingParams]:
        """The start of every `stream`: the prompt's tokens (read off the event loop when it is
        long) and `params` fitted to the room they leave (`fit`)."""
        ids = await off_the_loop_if_long(len(prompt), self._encode, prompt, chat)
        param = "messages" if chat else "prompt"
        if not ids:
            # Nothing to condition on (vLLM refuses it too); let into a running batch, its
            # prefill would fail the batch's other rows with it.
            raise RequestError(param, "the prompt has no tokens; give it at least one")
        return ids, self.fit(len(ids), params, param)

    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        """`messages` rendered through the model's chat template, ready for the reply; `tools`
        (OpenAI function tools) go to the template too when given. Messages may carry OpenAI's
        `tool_calls` / `tool_call_id` keys when `supports_tools`; otherwise the caller turns them
        into plain {role, content} messages first."""
        if self.tokenizer.chat_template:
            extra = {"tools": tools} if tools else {}
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, **extra
            )
        # A base model without a template: plain role-prefixed turns.
        return "".join(f"{m['role']}: {m.get('content') or ''}\n" for m in messages) + "assistant:"

    @functools.cached_property
    def supports_tools(self) -> bool:
        """Whether the model's chat template renders `tools` (SmolLM2-135M's does not): a probe
        tool with a name no template holds must come out in the rendered prompt."""
        if not self.tokenizer.chat_template:
            return False
        probe = {"type": "function", "function": {"name": _PROBE_TOOL, "parameters": {"type": "object"}}}
        try:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True, tools=[probe]
            )
        except Exception:  # a template that refuses tools (raise_exception) does not take them
            return False
        return _PROBE_TOOL in text

    @abc.abstractmethod
    def stream(
        self,
        prompt: str,
        params: SamplingParams,
        *,
        chat: bool = False,
        admitted: Callable[[], None] | None = None,
    ) -> AsyncIterator[Delta]:
        """Yields the completion of `prompt` piece by piece.

        Args:
            admitted: Called once, on the event loop, when the engine takes the request into
                the batch it decodes; until then the request waits in the engine's queue (an
                engine that keeps no queue of its own calls it when it hands the request on).
        """

    async def generate(
        self,
        prompt: str,
        params: SamplingParams,
        *,
        chat: bool = False,
        admitted: Callable[[], None] | None = None,
    ) -> Generation:
        """The whole completion of `prompt` (`admitted` as in `stream`)."""
        parts, last = [], Delta("")
        async for last in self.stream(prompt, params, chat=chat, admitted=admitted):
            parts.append(last.text)
        return Generation(
            "".join(parts), last.prompt_tokens, last.completion_tokens, last.finish_reason or "stop"
        )

    @abc.abstractmethod
    async def check_health(self) -> None:
        """Raises `EngineError` when the engine can no longer serve."""

    def fit(self, prompt_tokens: int, params: SamplingParams, param: str) -> SamplingParams:
        """`params` with `max_tokens` set when it was None (what the context has room for after
        the prompt, as vLLM's server does); refuses a request that does not fit, as OpenAI does."""
        room = self.max_model_len - prompt_tokens
        wanted = params.max_tokens if params.max_tokens is not None else max(room, 1)
        if wanted > room:
            raise RequestError(
                param,
                f"this model's maximum context length is {self.max_model_len} tokens; the request "
                f"asks for {prompt_tokens + wanted} ({prompt_tokens} in the prompt, "
                f"{wanted} for the completion)",
                code="context_length_exceeded",
            )
        return params if params.max_tokens is not None else params.model_copy(update={"max_tokens": room})


def resolve_engine_kind(kind: str) -> str:
    """'vllm' or 'transformers' for a configured kind; refuses vLLM where it cannot run."""
    has_vllm = importlib.util.find_spec("vllm") is not None
    if kind == "auto":
        return "vllm" if has_vllm and _gpu_visible() else "transformers"
    if kind == "vllm":
        if not has_vllm:
            raise EngineUnavailableError(
                "engine 'vllm' is configured but vLLM is not installed; install the GPU extra "
                "(pip install 'swarmray[gpu]') on a GPU node, or set engine.kind: transformers"
            )
        if not _gpu_visible():
            raise EngineUnavailableError(
                "engine 'vllm' is configured but no GPU is visible to this replica; give the "
                "model num_gpus > 0 in its resources, or set engine.kind: transformers"
            )
    return kind


def _gpu_visible() -> bool:
    import torch

    return torch.cuda.is_available()
