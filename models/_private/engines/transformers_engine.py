"""The transformers engine: torch on CPU (or a GPU without vLLM), streaming, continuous batching.

Up to `max_batch_size` requests are decoded together: one forward pass per step serves every
row of the running batch, left-padded, with a shared KV cache. Continuous batching (the
default, `EngineConfig.batching`): a request that arrives while the batch runs joins it at the
next step (its prompt is prefilled, and its cache rows are copied into free row slots of the
batch's cache), and a row that finishes or is cancelled leaves it at once (the batch's last row
moves into its slot, and columns no row uses any more are cut). The batch's cache is a
`SlotCache` (`slot_cache.py`): preallocated buffers written in place, not transformers'
`DynamicCache`, which copies the whole cache at every step. Joiners are let in up to
`prefill_tokens_per_step` prompt tokens a step, so that a wave of long prompts does not stall
the running rows for long. Static batching (`batching: static`) lets requests in only when the
batch is empty, as this engine did before; `batch_refill` applies to it alone.

Why not transformers' own `ContinuousBatchingManager` (`generate_batch`, paged KV cache): its
per-request logits processors are temperature, top-k and top-p only, each a number per row
(`cb_logits_processors.py`), so per-request grammar masks cannot be applied; it has no stop
strings, one seed for all requests, and a model whose cache cannot be paged falls back anyway.

A request with `json_schema` is decoded under a token mask (`grammar.TokenGrammars`): at each
step its row's logits keep only the tokens its grammar allows, the other rows are untouched,
and it finishes ("stop") when the grammar is complete.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import os
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from tokenizers.decoders import DecodeStream

from models._private.core.errors import EngineError
from models._private.engines.base import Delta, Engine, EngineConfig, Generation, SamplingParams
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
    done: bool = False  # its last item is sent
    generator: Any = None  # torch.Generator of a seeded request
    position: int = 0  # the position of `pending` in the request's own sequence
    pending: int = 0  # the last sampled token, not fed to the model yet
    admitted: Callable[[], None] | None = None  # told when the request joins the batch
    # None for a stream (each piece is sent as it is decoded); for a whole completion, its
    # pieces so far, sent as one at the end: a wake-up of the caller's loop per request instead
    # of one per token, which the decoding thread pays for in GIL hand-overs.
    parts: list[str] | None = None


def _finish(r: _Request, item: Any) -> None:
    """Sends `item` (a last Delta or an exception), then the end, to `r`'s waiter."""
    r.done = True
    if item is not None:
        r.loop.call_soon_threadsafe(r.out.put_nowait, item)
    r.loop.call_soon_threadsafe(r.out.put_nowait, _DONE)


class _Batch:
    """The running batch: its requests, and their rows of the KV cache and attention mask (left
    padded: every row's last token is in the last column).

    A model whose cache layers are all plain `DynamicLayer`s (the mergeable ones) keeps them in
    a `SlotCache`: updated in place, rows added and dropped without copying the others, and the
    mask inside it. Any other cache (sliding windows, convolution states) is the model's own,
    with `mask` beside it; it holds one static batch, and `gone` marks the rows that ended but
    stay, in a cache whose rows cannot be dropped (see `keep`)."""

    def __init__(self, max_rows: int, stats: Any) -> None:
        self.max_rows, self.stats = max_rows, stats  # stats: the engine's SlotCacheStats
        self.clear()

    def clear(self) -> None:
        self.rows: list[_Request] = []
        self.gone: list[bool] = []
        self.cache: Any = None
        self.mask: Any = None

    def merge(self, rows: list[_Request], cache: Any, mask: Any, live: list[bool], slotted: bool) -> None:
        """Appends the `live` ones of `rows`, with their prefill's cache and mask, to the batch's:
        copied into free slots of its `SlotCache` when `slotted`, else as the whole batch's
        cache (a batch of another cache takes rows only when it has none)."""
        if slotted:
            from models._private.engines.slot_cache import SlotCache

            if self.cache is None:
                self.cache = SlotCache(len(cache.layers), self.max_rows, self.stats)
            picked = [i for i, alive in enumerate(live) if alive]
            self.cache.add(cache, picked, mask)
            self.rows.extend(rows[i] for i in picked)
            self.gone.extend([False] * len(picked))
            return
        if self.rows:
            raise RuntimeError("a batch of an unmergeable cache takes rows only when it has none")
        self.rows, self.gone, self.cache, self.mask = list(rows), [False] * len(rows), cache, mask
        if not all(live):  # those that ended at their first token leave at once
            self.keep(live)

    def keep(self, live: list[bool]) -> None:
        """Drops the rows that are not `live`, and the columns no row uses any more.

        A cache whose rows cannot be dropped (convolution or linear-attention states have no
        `batch_select_indices`; only a static batch holds one) keeps them, marked `gone`: they
        are fed padding, masked out, until every row has gone, as static batching always did.
        """
        import torch

        from models._private.engines.slot_cache import SlotCache

        if isinstance(self.cache, SlotCache):
            order = self.cache.keep(live)
            self.rows = [self.rows[i] for i in order]
            self.gone = [False] * len(self.rows)
            if not self.rows:
                self.clear()  # frees the buffers: an idle engine holds no cache
            return
        layers = getattr(self.cache, "layers", None)
        if layers is None or not all(hasattr(layer, "batch_select_indices") for layer in layers):
            self.gone = [g or not alive for g, alive in zip(self.gone, live, strict=True)]
            if all(self.gone):
                self.clear()
            return
        self.rows = [r for r, alive in zip(self.rows, live, strict=True) if alive]
        self.gone = [False] * len(self.rows)
        if not self.rows:
            self.clear()
            return
        index = torch.tensor([i for i, alive in enumerate(live) if alive], device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        first = int(self.mask.any(0).long().argmax())  # the first column a row uses
        if first and all(type(layer).__name__ == "DynamicLayer" for layer in self.cache.layers):
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
            self.mask = self.mask[:, first:]

    def step_mask(self) -> Any:
        """The attention mask of the next decode step: every row's columns and the new one (0
        for a row that is `gone`)."""
        import torch

        from models._private.engines.slot_cache import SlotCache

        if isinstance(self.cache, SlotCache):
            return self.cache.step_mask()
        return torch.cat([self.mask, self.mask.new_tensor([[0 if g else 1] for g in self.gone])], dim=1)

    def stepped(self, cache: Any, mask: Any) -> None:
        """Takes the cache a decode step's forward pass returned and the mask it was given."""
        from models._private.engines.slot_cache import SlotCache

        if isinstance(self.cache, SlotCache):
            self.cache.advance()  # the layers wrote the new column in place
        else:
            self.cache, self.mask = cache, mask


class TransformersEngine(Engine):
    """A Hugging Face causal LM behind the `Engine` interface.

    Args:
        source: Local directory or hub id of the model and its tokenizer.
        config: See `EngineConfig`.
    """

    def __init__(self, source: str, config: EngineConfig | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from models._private.engines.slot_cache import SlotCacheStats

        self.config = config or EngineConfig()
        self.batch_rows = self.config.max_batch_size
        if os.path.isdir(source):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.device = self.config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cpu":
            # Ray sets OMP_NUM_THREADS to a replica's num_cpus (1 for 0 or 1): the model would
            # compute on one core of a node that has more.
            torch.set_num_threads(self.config.torch_threads or os.cpu_count() or 1)
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
        # Counters, visible to tests and benchmarks: batches (runs of steps from an empty batch
        # to an empty one), steps (decode forward passes), row_steps (rows those passes decoded),
        # prefills (forward passes of joiners' prompts), joined (requests that joined a batch
        # already running).
        self.batches = self.steps = self.row_steps = self.prefills = self.joined = 0
        # And what the batches' in-place KV caches did: relayouts (buffers reallocated, when a
        # batch outgrows them), rows_moved (rows copied into a finished row's slot).
        self.kv_stats = SlotCacheStats()
        self._mergeable: bool | None = None  # whether the model's cache rows can be merged
        self._bitmask: Any = None  # grammar masks of the constrained rows, max_batch_size rows
        # Only the last position's logits: a prefill's whole [rows, tokens, vocabulary] would
        # take hundreds of megabytes.
        forward = inspect.signature(self.model.forward).parameters
        self._last_logits = {"logits_to_keep": 1} if "logits_to_keep" in forward else {}
        # transformers 5 renames `past_key_values` to `cache` model by model.
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"

    # -- the interface --------------------------------------------------------------------

    async def stream(
        self,
        prompt: str,
        params: SamplingParams,
        *,
        chat: bool = False,
        admitted: Callable[[], None] | None = None,
    ) -> AsyncIterator[Delta]:
        async for delta in self._run_request(prompt, params, chat, admitted, whole=False):
            yield delta

    async def generate(
        self,
        prompt: str,
        params: SamplingParams,
        *,
        chat: bool = False,
        admitted: Callable[[], None] | None = None,
    ) -> Generation:
        """The whole completion of `prompt`, sent by the batch once, when it ends."""
        last = Delta("")
        async for delta in self._run_request(prompt, params, chat, admitted, whole=True):
            last = delta  # the only one
        return Generation(last.text, last.prompt_tokens, last.completion_tokens, last.finish_reason or "stop")

    async def _run_request(
        self,
        prompt: str,
        params: SamplingParams,
        chat: bool,
        admitted: Callable[[], None] | None,
        *,
        whole: bool,
    ) -> AsyncIterator[Delta]:
        """Queues one request for the batch and yields what it sends: each piece as it is
        decoded, or (`whole`) one Delta with the whole text at the end."""
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
            ids,
            params,
            loop,
            asyncio.Queue(),
            DecodeStream(skip_special_tokens=True),
            matcher=matcher,
            admitted=admitted,
            parts=[] if whole else None,
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
        static = self.config.batching == "static"
        cap = self.config.max_batch_size
        batch = _Batch(cap, self.kv_stats)  # of this event loop: a new loop starts with no rows
        backlog: collections.deque[_Request] = collections.deque()  # taken off the queue, not let in yet
        joiners: list[_Request] = []
        last_size, last_end, last_took = 0, 0.0, 0.0
        try:
            while True:
                if not batch.rows and not backlog:
                    backlog.append(await self._queue.get())
                    pending = list(backlog)
                    if static:
                        # The callers a batch answered tend to send their next requests within
                        # milliseconds of one another (over HTTP, not all at once): a static batch
                        # that started with the first of them would keep the others waiting its
                        # whole length. (A continuous batch lets them join as they come.)
                        refill_until = last_end + self.config.batch_refill * last_took
                        await self._gather(pending, min(last_size, cap), refill_until)
                    await self._gather(pending, cap, loop.time() + self.config.batch_wait_ms / 1000)
                    backlog.extend(pending[len(backlog) :])
                while not self._queue.empty():
                    backlog.append(self._queue.get_nowait())
                joiners = self._admit(batch, backlog, static)
                if not batch.rows:
                    if not joiners:
                        continue
                    self.batches += 1
                    started, size = loop.time(), len(joiners)
                else:
                    self.joined += len(joiners)

                def more_waiting() -> bool:
                    # Read from the decoding thread: a length, racy at worst by one step. A model
                    # whose cache rows cannot be merged takes no joiners: no reason to stop.
                    waiting = bool(backlog or self._queue.qsize())
                    return waiting and len(batch.rows) < cap and self._mergeable is not False

                await asyncio.to_thread(
                    self._run, batch, joiners, (lambda: False) if static else more_waiting
                )
                joiners = []  # in the batch, or answered: a later failure of the loop owes these nothing
                if not batch.rows:
                    last_size, last_end = size, loop.time()
                    last_took = last_end - started
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # the loop itself broke: the engine is dead
            self._failure = e
            # Whoever waits on a request it held or still queues would wait for ever: fail them.
            while not self._queue.empty():
                backlog.append(self._queue.get_nowait())
            error = EngineError(f"the batch loop stopped: {e!r}")
            for r in [*batch.rows, *joiners, *backlog]:
                if not r.done:
                    _finish(r, error)
            raise

    def _admit(self, batch: _Batch, backlog: collections.deque[_Request], static: bool) -> list[_Request]:
        """The requests of `backlog` that join `batch` now: up to `max_batch_size` rows in all,
        and (but for the first) up to `prefill_tokens_per_step` prompt tokens, so that a wave of
        long prompts does not stall the running rows' decoding for long. A static batch, or a
        model whose cache rows cannot be merged, takes them only when it has no rows."""
        if batch.rows and (static or not self._mergeable):
            return []
        room = self.config.max_batch_size - len(batch.rows)
        budget = self.config.prefill_tokens_per_step
        joiners: list[_Request] = []
        while backlog and len(joiners) < room:
            r = backlog[0]
            if r.cancelled:  # its caller went away while it queued
                backlog.popleft()
                continue
            if joiners and len(r.ids) > budget and not static:
                break
            budget -= len(r.ids)
            joiners.append(backlog.popleft())
            if r.admitted is not None:  # on the loop: the caller's deadline starts now
                r.admitted()
        return joiners

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

    def _run(self, batch: _Batch, joiners: list[_Request], more_waiting: Callable[[], bool]) -> None:
        """In a thread: lets `joiners` into `batch` (one prefill), then decodes step by step
        until the batch has no rows or `more_waiting` says requests wait to join."""
        import torch

        try:
            with self._lock, torch.inference_mode():
                if joiners:
                    self._join(batch, joiners)
                while batch.rows:
                    self._step(batch)
                    if more_waiting():
                        return
        except Exception as e:  # these requests fail; the engine goes on with an empty batch
            for r in [*batch.rows, *joiners]:
                if not r.done:
                    _finish(r, e)
            batch.clear()

    def _join(self, batch: _Batch, joiners: list[_Request]) -> None:
        """Prefills `joiners` together (left-padded), takes each one's first token, and merges
        the rows that go on into `batch`: copied into its slots, their last column beside the
        running rows' (the padding is masked out, and each row keeps its own positions)."""
        import torch

        width = max(len(r.ids) for r in joiners)
        ids = torch.tensor(
            [[self.pad_id] * (width - len(r.ids)) + r.ids for r in joiners], device=self.device
        )
        mask = torch.tensor(
            [[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in joiners], device=self.device
        )
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **self._last_logits
        )
        self.prefills += 1
        cache = out.past_key_values
        if self._mergeable is None:
            # Plain growing layers only (not sliding windows, not quantised or linear-attention
            # states): other caches run static batches.
            layers = getattr(cache, "layers", [None])
            self._mergeable = all(type(layer).__name__ == "DynamicLayer" for layer in layers)
        for r in joiners:
            r.generator = _generator(r.params, self.device)
            r.position = len(r.ids)
        live = self._choose(joiners, out.logits[:, -1, :].float())
        if any(live):  # those that ended at their first token are not let in
            batch.merge(joiners, cache, mask, live, slotted=self._mergeable)

    def _step(self, batch: _Batch) -> None:
        """One forward pass of every row's last token; the rows that finish leave the batch."""
        import torch

        rows, gone = batch.rows, batch.gone
        fed = [self.pad_id if g else r.pending for r, g in zip(rows, gone, strict=True)]
        ids = torch.tensor([[t] for t in fed], device=self.device)
        positions = torch.tensor([[r.position] for r in rows], device=self.device)
        mask = batch.step_mask()
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{self._cache_arg: batch.cache},
            **self._last_logits,
        )
        active = [i for i, g in enumerate(gone) if not g]
        self.steps += 1
        self.row_steps += len(active)
        batch.stepped(out.past_key_values, mask)
        for i in active:
            rows[i].position += 1
        logits = out.logits[:, -1, :].float()
        if len(active) < len(rows):
            logits = logits[active]
        chosen = self._choose([rows[i] for i in active], logits)
        if not all(chosen):
            live = [False] * len(rows)
            for i, alive in zip(active, chosen, strict=True):
                live[i] = alive
            batch.keep(live)

    def _choose(self, rows: list[_Request], logits: Any) -> list[bool]:
        """Samples each row's next token (under its grammar's mask, if it has one), sends what
        is new, and returns which rows go on."""
        constrained = [i for i, r in enumerate(rows) if r.matcher is not None]
        if constrained:
            # One bitmask for the constrained rows, filled and applied once a step.
            grammars = self.token_grammars()
            if self._bitmask is None:
                self._bitmask = grammars.allocate_bitmask(self.config.max_batch_size)
            for k, i in enumerate(constrained):
                grammars.fill_bitmask(rows[i].matcher, self._bitmask, k)
            grammars.apply_bitmask(logits, self._bitmask, constrained)
        live = []
        for i, r in enumerate(rows):
            r.pending = _sample(logits[i], r.params, r.generator)
            live.append(self._advance(r, r.pending))
        return live

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
                    _finish(r, EngineError(f"the output's grammar failed: {r.matcher.get_error()}"))
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
        if finish:
            if r.parts is not None:
                piece = "".join(r.parts) + piece
            _finish(r, Delta(piece, finish, len(r.ids), len(r.generated)))
            return False
        if piece:
            if r.parts is not None:
                r.parts.append(piece)
            else:
                delta = Delta(piece, None, len(r.ids), len(r.generated))
                r.loop.call_soon_threadsafe(r.out.put_nowait, delta)
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
