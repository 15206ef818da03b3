"""The transformers engine: torch on CPU (or a GPU without vLLM), streaming, request batching.

Requests queued when a batch starts (up to `max_batch_size`; `batch_wait_ms` can wait for
more, and after a batch of n requests `batch_refill` waits a little for n again) are decoded
together: one forward pass per step serves the whole batch, left-padded, with a shared KV cache.
A request that arrives while a batch runs waits for the next one (static batching; vLLM's
continuous batching is the engine for throughput on GPUs).

A request with `json_schema` is decoded under a token mask (`grammar.TokenGrammars`): at each
step its row's logits keep only the tokens its grammar allows, the other rows are untouched,
and it finishes ("stop") when the grammar is complete.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from tokenizers.decoders import DecodeStream

from models._private.core.errors import EngineError
from models._private.engines.base import Delta, Engine, EngineConfig, SamplingParams
from models._private.engines.grammar import TokenGrammars

__all__ = ["TransformersEngine"]

_DONE = object()


@dataclass
class _Request:
    ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    detokenizer: Any  # tokenizers' DecodeStream: each token decoded once
    generated: list[int] = field(default_factory=list)
    held: str = ""  # decoded, not sent yet: what may be the start of a stop string
    cancelled: bool = False
    matcher: Any = None  # an llguidance matcher when the request has a json_schema


class TransformersEngine(Engine):
    """A Hugging Face causal LM behind the `Engine` interface.

    Args:
        source: Local directory or hub id of the model and its tokenizer.
        config: See `EngineConfig`.
    """

    def __init__(self, source: str, config: EngineConfig | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config or EngineConfig()
        if os.path.isdir(source):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.device = self.config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = "auto" if self.config.dtype == "auto" else getattr(torch, self.config.dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(
            source, trust_remote_code=self.config.trust_remote_code
        )
        self.model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, trust_remote_code=self.config.trust_remote_code
        ).to(self.device)
        self.model.eval()
        own = getattr(self.model.config, "max_position_embeddings", None) or self.tokenizer.model_max_length
        self.max_model_len = min(self.config.max_model_len or own, own)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        if not self.tokenizer.is_fast:
            raise EngineError(f"{source}: the transformers engine needs a fast (tokenizers) tokenizer")
        self._backend = self.tokenizer.backend_tokenizer
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task | None = None
        self._failure: BaseException | None = None
        self._lock = threading.Lock()
        self._grammars: TokenGrammars | None = None  # built on the first constrained request
        self._grammars_lock = threading.Lock()
        self.batches = 0  # forward-pass batches run (visible to tests and benchmarks)

    # -- the interface --------------------------------------------------------------------

    async def stream(
        self, prompt: str, params: SamplingParams, *, chat: bool = False
    ) -> AsyncIterator[Delta]:
        ids, params = await self._tokens_and_params(prompt, params, chat)
        matcher = None
        if params.json_schema is not None:
            # A schema seen before is a copy of its compiled matcher (microseconds); a new one
            # compiles in about a millisecond, and the first one builds the tokenizer's index.
            grammars = self._grammars or await asyncio.to_thread(self.token_grammars)
            matcher = grammars.matcher(params.json_schema)
        loop = asyncio.get_running_loop()
        if self._worker is not None and self._worker.get_loop() is loop:
            await self.check_health()
        else:  # first use, or a new event loop (asyncio.run per call in scripts)
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._batch_loop())
        req = _Request(
            ids, params, loop, asyncio.Queue(), DecodeStream(skip_special_tokens=True), matcher=matcher
        )
        await self._queue.put(req)
        try:
            while (item := await req.out.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise EngineError(f"generation failed: {item!r}") from item
                yield item
        finally:
            req.cancelled = True  # a client that went away frees its row at the next step

    def token_grammars(self) -> TokenGrammars:
        """The compiled-grammar cache of this model's tokenizer (built on first use)."""
        with self._grammars_lock:
            if self._grammars is None:
                width = self.model.get_output_embeddings().weight.shape[0]
                self._grammars = TokenGrammars(self.tokenizer, width, sorted(self.eos_ids))
            return self._grammars

    async def check_health(self) -> None:
        if self._failure is not None:
            raise EngineError(f"the engine's batch loop died: {self._failure!r}")
        if self._worker is not None and self._worker.done():
            raise EngineError("the engine's batch loop has stopped")

    # -- batching -------------------------------------------------------------------------

    async def _batch_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        batch: list[_Request] = []
        last_size, last_end, last_took = 0, 0.0, 0.0
        try:
            while True:
                batch = [await self._queue.get()]
                # The callers a batch answered tend to send their next requests within
                # milliseconds of one another (over HTTP, not all at once): a batch that started
                # with the first of them would keep the others waiting its whole length.
                cap = self.config.max_batch_size
                refill_until = last_end + self.config.batch_refill * last_took
                await self._gather(batch, min(last_size, cap), refill_until)
                await self._gather(batch, cap, loop.time() + self.config.batch_wait_ms / 1000)
                batch = [r for r in batch if not r.cancelled]
                if batch:
                    self.batches += 1
                    start = loop.time()
                    await asyncio.to_thread(self._decode, batch)
                    last_size, last_end = len(batch), loop.time()
                    last_took = last_end - start
                batch = []  # answered: a later failure of the loop owes these nothing
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # the loop itself broke: the engine is dead
            self._failure = e
            # Whoever waits on a request it held or still queues would wait for ever: fail them.
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            for r in batch:
                r.loop.call_soon_threadsafe(r.out.put_nowait, EngineError(f"the batch loop stopped: {e!r}"))
                r.loop.call_soon_threadsafe(r.out.put_nowait, _DONE)
            raise

    async def _gather(self, batch: list[_Request], size: int, deadline: float) -> None:
        """Adds queued requests to `batch` until it holds `size` or the loop time `deadline`
        passes (what is queued already is taken either way)."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while len(batch) < size:
            timeout = deadline - loop.time()
            try:
                batch.append(
                    self._queue.get_nowait()
                    if timeout <= 0
                    else await asyncio.wait_for(self._queue.get(), timeout)
                )
            except (asyncio.QueueEmpty, asyncio.TimeoutError):  # not the builtin on 3.10
                return

    def _decode(self, batch: list[_Request]) -> None:
        try:
            with self._lock:
                self._decode_batch(batch)
        except Exception as e:  # this batch fails; the engine goes on
            for r in batch:
                r.loop.call_soon_threadsafe(r.out.put_nowait, e)
                r.loop.call_soon_threadsafe(r.out.put_nowait, _DONE)

    def _decode_batch(self, batch: list[_Request]) -> None:
        import torch

        width = max(len(r.ids) for r in batch)
        ids = torch.tensor([[self.pad_id] * (width - len(r.ids)) + r.ids for r in batch], device=self.device)
        mask = torch.tensor(
            [[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in batch], device=self.device
        )
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        generators = [_generator(r.params, self.device) for r in batch]
        live = [True] * len(batch)
        past: Any = None
        steps = max(r.params.max_tokens for r in batch)
        constrained = [i for i, r in enumerate(batch) if r.matcher is not None]
        if constrained:
            # One bitmask for the batch's constrained rows, filled and applied once a step.
            grammars = self.token_grammars()
            bitmask = grammars.allocate_bitmask(len(constrained))
        with torch.inference_mode():
            for _ in range(steps):
                out = self.model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=past,
                    use_cache=True,
                )
                past = out.past_key_values
                logits = out.logits[:, -1, :].float()
                if constrained:
                    rows = [i for i in constrained if live[i]]
                    for k, i in enumerate(rows):
                        grammars.fill_bitmask(batch[i].matcher, bitmask, k)
                    if rows:
                        grammars.apply_bitmask(logits, bitmask, rows)
                nxt = []
                for i, r in enumerate(batch):
                    if not live[i]:
                        nxt.append(self.pad_id)
                        continue
                    token = _sample(logits[i], r.params, generators[i])
                    nxt.append(token)
                    live[i] = self._advance(r, token)
                if not any(live):
                    return
                ids = torch.tensor(nxt, device=self.device).unsqueeze(1)
                step_mask = torch.tensor([[1 if x else 0] for x in live], device=self.device)
                mask = torch.cat([mask, step_mask], dim=1)
                positions = positions[:, -1:] + 1

    def _advance(self, r: _Request, token: int) -> bool:
        """Takes one sampled token for `r`; sends what is new; returns whether `r` goes on.

        Only the new token is decoded (a DecodeStream holds back a character split over
        tokens), and stop strings are looked for in the text not sent yet, which is never longer
        than the longest stop string plus one token's text: linear in the output's length.
        """
        if r.cancelled:
            return False
        finish = None
        if token in self.eos_ids:
            finish = "stop"
        else:
            r.generated.append(token)
            r.held += r.detokenizer.step(self._backend, token) or ""
            if r.matcher is not None:
                if not r.matcher.consume_token(token) or r.matcher.is_error():
                    # Only a grammar past llguidance's step limits gets here (the mask let the
                    # token through): the output would not match, so the request fails.
                    error = EngineError(f"the output's grammar failed: {r.matcher.get_error()}")
                    r.loop.call_soon_threadsafe(r.out.put_nowait, error)
                    r.loop.call_soon_threadsafe(r.out.put_nowait, _DONE)
                    return False
                if r.matcher.is_stopped():  # complete, and nothing may follow but EOS
                    finish = "stop"
        text = r.held
        for s in r.params.stop:
            if s and (at := text.find(s)) >= 0:
                text, finish = text[:at], "stop"
                break
        if finish is None and (
            len(r.generated) >= r.params.max_tokens or len(r.ids) + len(r.generated) >= self.max_model_len
        ):
            finish = "length"
        # Hold back what may be the start of a stop string.
        keep = 0 if finish else max((len(s) for s in r.params.stop), default=1) - 1
        piece, r.held = text[: len(text) - keep], text[len(text) - keep :]
        if piece or finish:
            delta = Delta(piece, finish, len(r.ids), len(r.generated))
            r.loop.call_soon_threadsafe(r.out.put_nowait, delta)
        if finish:
            r.loop.call_soon_threadsafe(r.out.put_nowait, _DONE)
            return False
        return True


def _generator(params: SamplingParams, device: str) -> Any:
    import torch

    if params.seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(params.seed)
    return g


# A temperature this low samples the top token anyway, and a lower one makes the scaled logits
# overflow (vLLM's _SAMPLING_EPS is the same).
_GREEDY_BELOW = 1e-5


def _sample(logits: Any, params: SamplingParams, generator: Any) -> int:
    import torch

    if params.temperature < _GREEDY_BELOW:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < params.top_p
        keep[0] = True  # the top token, also when top_p is below float32's smallest number
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None) or tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) - {None}
