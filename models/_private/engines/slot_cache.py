"""`SlotCache`: the running batch's KV cache, kept in preallocated buffers and updated in place.

transformers' `DynamicCache` grows by `torch.cat` at every forward pass (a copy of each layer's
whole cache per decoded token), and dropping a finished row with `batch_select_indices` copies
every other row again. On a batch of 32 rows several hundred tokens long that was about a
quarter of the engine's time (issue 29's profile). Here each layer's keys and values live in one
buffer of [row slots, heads, column capacity, head dim]:

- the live rows are slots 0..rows-1, left-padded as the engine's batch is: every row's last
  cached token is in column `end - 1`, and `[start, end)` is the window any live row uses;
- a decode step writes its new column at `end` in place and hands the layers views of
  `[:rows, :, start:end + 1]` (no copy);
- a row that ends takes the last live row into its slot (one row copied, not the batch), and
  columns no row uses any more are cut off the window (a view again);
- a joining request's prefilled rows are copied into the next slots, right-aligned to `end`;
- the buffers are reallocated only when a join needs more slots, more columns on the left, or
  when the window reaches the right edge (then it moves back left, with a quarter of spare
  columns, so that happens once every several steps, not at every step).

The attention mask lives beside it ([row slots, columns]): a slot's mask row is 1 exactly on the
columns of its own tokens, so padding, stale columns of a former occupant and spare columns are
all masked out (the buffers start zeroed, so masked columns hold finite numbers, never NaN).

Only caches whose every layer is a plain `DynamicLayer` (full attention) are copied into one;
the engine batches other caches (sliding windows, convolution states) as before.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

__all__ = ["SlotCache", "SlotCacheStats"]

# Spare columns a new layout leaves on the right of the window: a quarter of what it holds, and
# at least this many, so that the window moves back left once every that many steps.
_MIN_SPARE_COLUMNS = 64


@dataclass
class SlotCacheStats:
    """What the slot caches of one engine did, summed over its batches (for tests and
    benchmarks): buffers reallocated, and rows copied into a finished row's slot."""

    relayouts: int = 0
    rows_moved: int = 0


class _SlotLayer(DynamicLayer):
    """One decoder layer's keys and values inside its `SlotCache`'s geometry."""

    def __init__(self, owner: SlotCache) -> None:
        super().__init__()
        # A proxy, not the cache itself: a cycle (cache -> layers -> cache) would keep a dropped
        # batch's buffers until Python's cycle collector ran, beside the next batch's.
        self.owner = weakref.proxy(owner)
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        raise RuntimeError("a SlotCache layer is filled by SlotCache.add, not by a first update")

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Writes the new columns of every live row at `end`, in place, and returns views of the
        window with them."""
        g = self.owner
        rows, new = key_states.shape[0], key_states.shape[-2]
        if rows != g.rows or g.end + new > g.column_capacity:
            raise RuntimeError(
                f"a SlotCache update of {rows} rows x {new} columns does not fit its layout "
                f"({g.rows} rows, columns {g.start}..{g.end} of {g.column_capacity}): reserve first"
            )
        self.key_buffer[:rows, :, g.end : g.end + new] = key_states
        self.value_buffer[:rows, :, g.end : g.end + new] = value_states
        # Views only, not kept in `keys`/`values`: those would hold a replaced buffer alive.
        window = slice(g.start, g.end + new)
        return self.key_buffer[:rows, :, window], self.value_buffer[:rows, :, window]

    def get_seq_length(self) -> int:
        return self.owner.end - self.owner.start

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        raise NotImplementedError("a SlotCache is cleared by dropping it")

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a SlotCache's window is cut by SlotCache.keep")

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("a SlotCache's rows come from SlotCache.add")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise NotImplementedError("a SlotCache's rows leave through SlotCache.keep")


class SlotCache(Cache):
    """The KV cache of a running batch, in place (see the module's docstring).

    Args:
        layers: The model's decoder layers (those of its own prefill cache).
        max_rows: The most rows the batch holds (the engine's `max_batch_size`); slots grow by
            doubling up to it.
        stats: Where to count relayouts and moved rows (a new one by default).

    Attributes:
        rows: Live rows, in slots 0..rows-1.
        start, end: The window of columns live rows use; a step's new column goes at `end`.
    """

    def __init__(self, layers: int, max_rows: int, stats: SlotCacheStats | None = None) -> None:
        super().__init__(layers=[_SlotLayer(self) for _ in range(layers)])
        self.max_rows = max_rows
        self.stats = stats or SlotCacheStats()
        self.rows = self.start = self.end = 0
        self.row_capacity = self.column_capacity = 0
        self.mask: torch.Tensor | None = None  # [row_capacity, column_capacity], int64

    @property
    def width(self) -> int:
        """Columns of the window, as the model sees them (its past length)."""
        return self.end - self.start

    # -- rows in and out ------------------------------------------------------------------

    def add(self, prefill: Cache, picked: list[int], mask: torch.Tensor) -> None:
        """Copies rows `picked` of a prefill's cache (left-padded, [rows, heads, width, dim] per
        layer) and of its attention mask ([rows, width]) into the next free slots, their last
        column at `end - 1` as every live row's."""
        if not picked:
            return
        width = mask.shape[1]
        first, last = self.rows, self.rows + len(picked)
        self._reserve(last, left=width, right=1, like=prefill)
        at = torch.tensor(picked, device=mask.device) if len(picked) < mask.shape[0] else None
        columns = slice(self.end - width, self.end)
        for mine, theirs in zip(self.layers, prefill.layers, strict=True):
            keys, values = theirs.keys, theirs.values
            if at is not None:
                keys, values = keys.index_select(0, at), values.index_select(0, at)
            mine.key_buffer[first:last, :, columns] = keys
            mine.value_buffer[first:last, :, columns] = values
        self.mask[first:last] = 0
        self.mask[first:last, columns] = mask if at is None else mask.index_select(0, at)
        self.rows = last
        self.start = min(self.start, self.end - width)  # with no rows before, start is end
        self._trim()

    def keep(self, live: list[bool]) -> list[int]:
        """Drops the rows that are not `live` (one per slot, in slot order); the last live rows
        move into the freed slots below them. Returns the new order: slot i now holds what slot
        `order[i]` held."""
        if len(live) != self.rows:
            raise ValueError(f"{len(live)} rows told apart, the cache holds {self.rows}")
        kept = sum(live)
        holes = [i for i in range(kept) if not live[i]]
        movers = [i for i in range(kept, self.rows) if live[i]]
        order = list(range(kept))
        if holes:  # as many movers as holes: each survivor past `kept` fills one
            to = torch.tensor(holes, device=self.mask.device)
            frm = torch.tensor(movers, device=self.mask.device)
            window = slice(self.start, self.end)
            for layer in self.layers:
                layer.key_buffer[to, :, window] = layer.key_buffer[frm, :, window]
                layer.value_buffer[to, :, window] = layer.value_buffer[frm, :, window]
            self.mask[to] = self.mask[frm]
            for h, m in zip(holes, movers, strict=True):
                order[h] = m
            self.stats.rows_moved += len(holes)
        self.rows = kept
        self._trim()
        return order

    # -- a decode step ------------------------------------------------------------------

    def step_mask(self, columns: int = 1) -> torch.Tensor:
        """Makes room for `columns` new columns of every live row and returns the attention mask
        the step's forward pass takes: [rows, width + columns], a view."""
        self._reserve(self.rows, left=0, right=columns)
        self.mask[: self.rows, self.end : self.end + columns] = 1
        return self.mask[: self.rows, self.start : self.end + columns]

    def advance(self, columns: int = 1) -> None:
        """Called after the forward pass that wrote `columns` new columns."""
        self.end += columns

    # -- layout -------------------------------------------------------------------------

    def _trim(self) -> None:
        """Cuts the leading columns no live row uses off the window (the buffers stay)."""
        if not self.rows:
            self.start = self.end
            return
        used = self.mask[: self.rows, self.start : self.end].any(0)
        self.start += int(used.long().argmax())

    def _reserve(self, rows: int, *, left: int, right: int, like: Cache | None = None) -> None:
        """Makes the layout hold `rows` slots, `left` columns up to `end` and `right` columns
        past it, reallocating the buffers if it does not (with `like`'s heads, dim, dtype and
        device on the first call)."""
        if rows <= self.row_capacity and self.end >= left and self.end + right <= self.column_capacity:
            return
        before = max(self.width, left)  # columns up to `end` in the new layout
        need = before + right
        row_capacity = self.row_capacity
        if rows > row_capacity:
            row_capacity = max(rows, min(self.max_rows, 2 * row_capacity))
        column_capacity = need + max(need // 4, _MIN_SPARE_COLUMNS)
        self._relayout(row_capacity, column_capacity, before, like)

    def _relayout(self, row_capacity: int, column_capacity: int, end: int, like: Cache | None) -> None:
        """New zeroed buffers of that size; the live rows' window is copied so that it ends at
        column `end`."""
        start = end - self.width
        old, new = slice(self.start, self.end), slice(start, end)
        for i, layer in enumerate(self.layers):
            first = layer.key_buffer is None  # shaped like the prefill's layer
            keys = like.layers[i].keys if first else layer.key_buffer
            values = like.layers[i].values if first else layer.value_buffer
            key_buffer = keys.new_zeros((row_capacity, keys.shape[1], column_capacity, keys.shape[3]))
            value_buffer = values.new_zeros((row_capacity, values.shape[1], column_capacity, values.shape[3]))
            if self.rows:
                key_buffer[: self.rows, :, new] = layer.key_buffer[: self.rows, :, old]
                value_buffer[: self.rows, :, new] = layer.value_buffer[: self.rows, :, old]
            layer.key_buffer, layer.value_buffer = key_buffer, value_buffer
            layer.is_initialized = True
        device = self.layers[0].key_buffer.device
        mask = torch.zeros((row_capacity, column_capacity), dtype=torch.long, device=device)
        if self.rows:
            mask[: self.rows, new] = self.mask[: self.rows, old]
        self.mask = mask
        self.row_capacity, self.column_capacity = row_capacity, column_capacity
        self.start, self.end = start, end
        self.stats.relayouts += 1
