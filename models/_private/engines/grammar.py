"""JSON Schemas as token masks (llguidance): `check_schema` for the gateway, `TokenGrammars` for
an engine.

A request's `SamplingParams.json_schema` is compiled by llguidance into a grammar, checked once
per schema (`check_schema`: no model or tokenizer needed, so the gateway refuses a bad schema
before it routes the request), and, in the engine, turned into a matcher for the model's
tokenizer (`TokenGrammars.matcher`) that says at each decoding step which tokens may come next.

Why llguidance rather than xgrammar (vLLM's default), measured on SmolLM2's 49k vocabulary: a
3 MB wheel with no dependencies (xgrammar needs torch, transformers and triton besides its FFI
library); its grammars compile lazily, 2 to 6 times faster (1 ms for a small schema, 10 ms for
30 tools); it checks a schema without any tokenizer, under fuel limits on compile and on every
step; and vLLM runs it too (its `guidance` backend). xgrammar's per-step mask is faster (1-3 µs
against 12-23 µs), which is nothing next to a decode step of 100 ms.

Whitespace between JSON tokens is not allowed (`whitespace_flexible` off): the output is compact
JSON, and a small model cannot loop on blank space until `max_tokens` runs out.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Any

from models._private.core.errors import RequestError

__all__ = [
    "MAX_SCHEMA_CHARS",
    "TokenGrammars",
    "canonical_schema",
    "check_schema",
]

# The longest schema taken, as compact JSON. OpenAI allows 100 object properties and 5 levels of
# nesting in a strict schema, which fits in a few kilobytes; tool lists of dozens of functions
# stay well under this. llguidance refuses a larger grammar by itself, but building it first
# costs seconds for a schema of megabytes.
MAX_SCHEMA_CHARS = 64 * 1024
# Compiled schemas kept: the gateway's checks and each engine's matchers (per tokenizer).
_CHECKED_SCHEMAS = 1024
_COMPILED_PER_TOKENIZER = 256
# llguidance's JSON compiler options: compact JSON (see the module docstring).
_JSON_OPTIONS = {"whitespace_flexible": False}
# The longest reason a refusal repeats from llguidance.
_REASON_CHARS = 300


def _limits() -> Any:
    """llguidance's bounds on compile and step work. The values are its defaults, spelled out
    because they are what makes a schema's compile time bounded: `initial_lexer_fuel` bounds the
    regular expressions' compile (about 20 ms), `step_lexer_fuel` and `step_max_items` one
    step's mask (about 15 ms and 2.5 ms), `max_grammar_size` the grammar a schema expands to
    (`allOf` of `anyOf`s multiplies out; past this it is "schema too large").
    `verbose_errors` off keeps the parser's state out of the messages a client reads."""
    import llguidance

    return llguidance.LLParserLimits(
        max_items_in_row=2000,
        initial_lexer_fuel=1_000_000,
        step_lexer_fuel=200_000,
        step_max_items=50_000,
        max_lexer_states=250_000,
        max_grammar_size=500_000,
        verbose_errors=False,
    )


def canonical_schema(schema: Any, param: str) -> str:
    """`schema` as compact JSON: the key of every cache here. Keys keep their order, as the
    output's properties come in the order the schema lists them (as OpenAI's do).

    Raises:
        RequestError: `schema` is not a JSON object, holds what JSON cannot (NaN, a set), nests
            deeper than Python's recursion allows, or is longer than `MAX_SCHEMA_CHARS`.
    """
    if not isinstance(schema, dict):
        raise RequestError(param, "a JSON Schema must be a JSON object")
    try:
        text = json.dumps(schema, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise RequestError(param, f"the JSON Schema is not JSON: {type(e).__name__}") from None
    if len(text) > MAX_SCHEMA_CHARS:
        raise RequestError(
            param, f"the JSON Schema is {len(text)} characters long; at most {MAX_SCHEMA_CHARS} are taken"
        )
    return text


def check_schema(schema: Any, param: str) -> None:
    """Refuses a schema the engines cannot constrain decoding to; cached by its canonical JSON.

    Bounded: the size by `MAX_SCHEMA_CHARS`, the compile by llguidance's limits (milliseconds
    for any schema under the size cap).

    Raises:
        RequestError: (HTTP 400, naming `param`) the schema is not a JSON object, too long, not
            valid JSON Schema, uses what llguidance does not support, or expands to a grammar
            larger than its limits.
    """
    _, error = _compiled(canonical_schema(schema, param))
    if error:
        raise RequestError(param, f"unsupported JSON Schema: {error}")


@lru_cache(maxsize=_CHECKED_SCHEMAS)
def _compiled(key: str) -> tuple[str, str]:
    """(llguidance grammar, error) of the canonical schema `key`; the error is "" when it is fine."""
    import llguidance

    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(key, defaults=_JSON_OPTIONS)
    except (ValueError, TypeError) as e:
        return "", _short(str(e))
    error = llguidance.LLMatcher.validate_grammar(grammar, None, limits=_limits())
    if error.startswith("WARNING"):  # versions that report warnings here; they do not refuse
        error = ""
    return grammar, _short(error)


def _short(reason: str) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= _REASON_CHARS else reason[: _REASON_CHARS - 3] + "..."


class TokenGrammars:
    """Matchers of JSON Schemas for one tokenizer: each schema compiled once (an LRU of
    `_COMPILED_PER_TOKENIZER`), copied for each request. Thread-safe.

    Args:
        tokenizer: A fast Hugging Face tokenizer.
        vocab_size: Width of the model's logits (may exceed the tokenizer's vocabulary).
        eos_ids: The tokens that end a completion; the grammar allows them when it is complete.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: list[int]):
        import llguidance.hf

        # About 0.4 s for a 49k vocabulary: built once per engine, on its first constrained request.
        self.ll_tokenizer = llguidance.hf.from_tokenizer(
            tokenizer, n_vocab=max(vocab_size, len(tokenizer)), eos_token=sorted(eos_ids)
        )
        self.vocab_size = self.ll_tokenizer.vocab_size
        self._lock = threading.Lock()
        self._matchers: OrderedDict[str, Any] = OrderedDict()

    def matcher(self, schema: dict[str, Any], param: str = "json_schema") -> Any:
        """A fresh `llguidance.LLMatcher` for `schema`, at the start of the output.

        Raises:
            RequestError: as `check_schema` does.
        """
        import llguidance

        key = canonical_schema(schema, param)
        with self._lock:
            template = self._matchers.get(key)
            if template is not None:
                self._matchers.move_to_end(key)
                return template.deep_copy()
        grammar, error = _compiled(key)
        if error:
            raise RequestError(param, f"unsupported JSON Schema: {error}")
        template = llguidance.LLMatcher(self.ll_tokenizer, grammar, log_level=0, limits=_limits())
        if template.is_error():
            raise RequestError(param, f"unsupported JSON Schema: {_short(template.get_error())}")
        with self._lock:
            self._matchers[key] = template
            while len(self._matchers) > _COMPILED_PER_TOKENIZER:
                self._matchers.popitem(last=False)
        return template.deep_copy()

    def allocate_bitmask(self, rows: int) -> Any:
        """A torch int32 tensor of `rows` token masks (32 tokens a word), for `fill_bitmask`."""
        import torch

        return torch.full((rows, (self.vocab_size + 31) // 32), -1, dtype=torch.int32)

    @staticmethod
    def fill_bitmask(matcher: Any, bitmask: Any, row: int) -> None:
        """Writes the tokens `matcher` allows next into `bitmask[row]` (only EOS once it is
        complete, or failed)."""
        import llguidance.torch

        llguidance.torch.fill_next_token_bitmask(matcher, bitmask, row)

    def apply_bitmask(self, logits: Any, bitmask: Any, rows: list[int]) -> None:
        """Sets to -inf, in place, the logits of `rows` (indices into `logits`) that the first
        len(rows) rows of `bitmask` (row k for rows[k]) do not allow.

        llguidance's own `apply_token_bitmask_inplace` is a `torch.compile` kernel, which on CPU
        compiles C++ on first use; numpy unpacks the bits here instead (token t is bit t % 32 of
        word t // 32, little-endian), about 2 ms of CPU for 8 rows of 49k tokens.
        """
        import numpy as np
        import torch

        n, width = len(rows), logits.shape[1]
        bits = np.unpackbits(bitmask[:n].numpy().view(np.uint8), axis=1, bitorder="little")
        blocked = torch.from_numpy(bits[:, :width]) == 0
        if blocked.shape[1] < width:  # logits wider than the mask: the rest is not allowed
            blocked = torch.cat([blocked, torch.ones(n, width - blocked.shape[1], dtype=torch.bool)], dim=1)
        blocked = blocked.to(logits.device)
        if n == logits.shape[0]:  # every row constrained: no copy
            logits.masked_fill_(blocked, float("-inf"))
        else:
            index = torch.tensor(rows, device=logits.device)
            logits[index] = logits[index].masked_fill(blocked, float("-inf"))
