"""`SlotCache`, the engine's in-place KV cache, driven with the real tiny model: rows join (one
with a prompt longer than the window, so the window grows on the left), leave (the last row
moves into the freed slot), and a freed slot takes the next joiner without a reallocation;
every step's logits match each row decoded alone in transformers' own `DynamicCache`, and
between reallocations the steps write into the same buffers."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from models._private.engines.slot_cache import SlotCache
from models._private.engines.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = build_tiny_model(str(tmp_path_factory.mktemp("tiny")))
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


class Solo:
    """One row decoded alone, in a DynamicCache: the reference."""

    def __init__(self, model, prompt: list[int]):
        self.model, self.position = model, len(prompt)
        out = model(input_ids=torch.tensor([prompt]), use_cache=True)
        self.cache, self.logits = out.past_key_values, out.logits[0, -1]

    def step(self, token: int) -> torch.Tensor:
        out = self.model(
            input_ids=torch.tensor([[token]]),
            position_ids=torch.tensor([[self.position]]),
            cache=self.cache,
            use_cache=True,
        )
        self.position += 1
        self.cache, self.logits = out.past_key_values, out.logits[0, -1]
        return self.logits


def prefill(model, prompts: list[list[int]]):
    """The engine's prefill: left-padded, masked, each row at its own positions."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    return out.past_key_values, mask, out.logits[:, -1]


def step(model, cache: SlotCache, rows: list[Solo], tokens: list[int]) -> torch.Tensor:
    """One decode step of every row in `cache`, checked against each row's solo step."""
    mask = cache.step_mask()
    out = model(
        input_ids=torch.tensor([[t] for t in tokens]),
        attention_mask=mask,
        position_ids=torch.tensor([[r.position] for r in rows]),
        cache=cache,
        use_cache=True,
    )
    cache.advance()
    assert out.past_key_values is cache
    for row, token, logits in zip(rows, tokens, out.logits[:, -1], strict=True):
        torch.testing.assert_close(logits, row.step(token), rtol=1e-4, atol=1e-4)
    return out.logits[:, -1]


def test_rows_join_leave_and_reuse_slots_in_place_and_decode_as_they_would_alone(model):
    torch.manual_seed(0)
    vocab = model.config.vocab_size
    prompt = lambda n: torch.randint(5, vocab, (n,)).tolist()  # noqa: E731
    token = lambda: int(torch.randint(5, vocab, ()))  # noqa: E731
    cache = SlotCache(model.config.num_hidden_layers, max_rows=4)

    # Two rows of different lengths from one prefill.
    prompts = [prompt(5), prompt(3)]
    kv, mask, logits = prefill(model, prompts)
    rows = [Solo(model, p) for p in prompts]
    for r, lg in zip(rows, logits, strict=True):
        torch.testing.assert_close(lg, r.logits, rtol=1e-4, atol=1e-4)
    cache.add(kv, [0, 1], mask)
    assert (cache.rows, cache.row_capacity, cache.stats.relayouts) == (2, 2, 1)
    assert (cache.start, cache.end) == (0, 5)
    for _ in range(3):
        step(model, cache, rows, [token() for _ in rows])

    # A joiner whose prompt (20) is longer than the batch's columns so far (8): the window grows
    # on the left; a third row doubles the slots.
    kv, mask, _ = prefill(model, [long := prompt(20)])
    cache.add(kv, [0], mask)
    rows.append(Solo(model, long))
    assert cache.rows == 3 and cache.row_capacity == 4 and cache.width == 20
    assert cache.stats.relayouts == 2
    step(model, cache, rows, [token() for _ in rows])

    # The first row ends: the last row moves into its slot (one row copied).
    order = cache.keep([False, True, True])
    rows = [rows[i] for i in order]
    assert order == [2, 1] and cache.stats.rows_moved == 1 and cache.rows == 2
    assert cache.width == 21, "the long row still starts the window"
    step(model, cache, rows, [token() for _ in rows])

    # Two joiners, one of which ends at its first token: the other takes the freed slot, with
    # no reallocation; then the long row ends and the window is cut to what the others use.
    kv, mask, _ = prefill(model, [a := prompt(4), prompt(6)])
    cache.add(kv, [0], mask)
    rows.append(Solo(model, a))
    assert cache.rows == 3 and cache.stats.relayouts == 2
    order = cache.keep([False, True, True])
    rows = [rows[i] for i in order]
    assert cache.width < 20

    # Decoding past the columns' capacity moves the window back left once, and every step in
    # between writes into the same buffers.
    buffer, relayouts = cache.layers[0].key_buffer.data_ptr(), cache.stats.relayouts
    steps = 0
    while cache.stats.relayouts == relayouts:
        step(model, cache, rows, [token() for _ in rows])
        steps += 1
        if cache.stats.relayouts == relayouts:
            assert cache.layers[0].key_buffer.data_ptr() == buffer, "a step copied the cache"
    assert steps > 16, "a relayout leaves spare columns for many steps"
    for _ in range(3):
        step(model, cache, rows, [token() for _ in rows])

    # Every row ends: the window is empty, and a new row starts it again.
    cache.keep([False] * cache.rows)
    assert cache.rows == 0 and cache.width == 0
    kv, mask, _ = prefill(model, [b := prompt(7)])
    cache.add(kv, [0], mask)
    rows = [Solo(model, b)]
    step(model, cache, rows, [token()])


def test_a_dropped_cache_frees_its_buffers_at_once_without_the_cycle_collector(model):
    # The engine drops a finished batch's cache and allocates the next batch's: with the old
    # buffers kept until a cycle collection, two sets of KV buffers would be held at once.
    import gc
    import weakref

    prefilled, mask, _ = prefill(model, [[5, 6, 7], [8, 9]])
    cache = SlotCache(model.config.num_hidden_layers, max_rows=4)
    cache.add(prefilled, [0, 1], mask)
    buffer = weakref.ref(cache.layers[0].key_buffer)
    gc.disable()
    try:
        del cache
        assert buffer() is None
    finally:
        gc.enable()
