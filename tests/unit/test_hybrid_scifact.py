"""Hybrid search beats each side on a small SciFact fixture (train queries, real embedder)."""

from pathlib import Path

import pytest

from benchmarks._beir import evaluate, load_beir
from models import Embedder
from models._private.memory.hybrid import HybridMemory, MemoryConfig

SCIFACT = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "scifact"


@pytest.fixture(scope="module")
def fixture_results():
    if not SCIFACT.exists():
        pytest.skip(f"no SciFact at {SCIFACT}")
    data = load_beir(SCIFACT)
    queries, qrels = data.split("train")
    chosen = sorted(queries)[:100]
    qrels = {q: qrels[q] for q in chosen}
    relevant = {d for q in chosen for d in qrels[q] if d in data.corpus}
    # The judged documents plus the first others in corpus order: 300 documents in all.
    docs = sorted(relevant) + [d for d in data.corpus if d not in relevant][: 300 - len(relevant)]
    memory = HybridMemory(["scifact"], MemoryConfig(), embedder=Embedder())
    memory.upsert(
        [
            {
                "id": d,
                "namespace": "scifact",
                "text": f"{data.corpus[d]['title']} {data.corpus[d]['text']}"[:20_000],
            }
            for d in docs
        ]
    )
    results = {}
    for mode in ("dense", "lexical", "hybrid"):
        run = {q: {h.record.id: h.score for h in memory.search(queries[q], 10, mode=mode)} for q in chosen}
        results[mode] = evaluate(run, qrels)["ndcg10"]
    return results


def test_hybrid_beats_dense_and_lexical_alone(fixture_results):
    r = fixture_results
    assert r["hybrid"] > r["dense"] and r["hybrid"] > r["lexical"], r
