"""Retrieval quality of the hybrid memory on a BEIR-format dataset (default: SciFact).

The corpus goes in through `HybridMemory.upsert` and queries through `HybridMemory.search` in
each mode, so the figures are the memory's own: its chunking, its indexes, its fusion. Only the
encoder's output is cached on disk (keyed by model and text hash); the first run encodes the
corpus, later runs take a few seconds to index.

`--sweep` also fuses the same dense and lexical lists under other fusion settings, with the
same `fuse` the memory uses; that is how the default was chosen, on `--split train`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks._beir import evaluate, load_beir
from benchmarks._common import emit
from benchmarks._embcache import EmbeddingCache
from models import Embedder, HybridMemory, MemoryConfig, fuse

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(DEFAULT), help="a BEIR-format directory")
    parser.add_argument("--split", default="test", help="qrels split to evaluate (tune on train)")
    parser.add_argument("--cache", default=None, help="embedding cache directory")
    parser.add_argument("--chunk-tokens", type=int, default=200, help="0: one vector per document")
    parser.add_argument("--sweep", action="store_true", help="also print other fusion settings")
    args = parser.parse_args()

    data = load_beir(args.dataset)
    queries, qrels = data.split(args.split)
    embedder = EmbeddingCache(Embedder(), args.cache)
    memory = HybridMemory(["corpus"], MemoryConfig(chunk_tokens=args.chunk_tokens or None), embedder=embedder)
    started = time.perf_counter()
    docs = list(data.corpus.items())
    for at in range(0, len(docs), 1000):
        memory.upsert(
            [
                {"id": i, "namespace": "corpus", "text": f"{d['title']} {d['text']}".strip()}
                for i, d in docs[at : at + 1000]
            ]
        )
    print(
        f"indexed {len(docs)} documents ({sum(len(d) for d in memory.dense.values())} vectors) in "
        f"{time.perf_counter() - started:.0f} s; encoder cache {embedder.hits} hits, {embedder.misses} misses"
    )

    runs: dict[str, dict[str, dict[str, float]]] = {"dense": {}, "lexical": {}, "hybrid": {}}
    lists: dict[str, dict[str, list[tuple[str, float]]]] = {"dense": {}, "lexical": {}}
    for qid, text in queries.items():
        for mode in runs:
            hits = memory.search(text, 100, mode=mode)
            runs[mode][qid] = {h.record.id: h.score for h in hits}
            if mode in lists:
                lists[mode][qid] = [(h.record.id, h.scores[mode]) for h in hits]
    scores = {mode: evaluate(run, qrels) for mode, run in runs.items()}

    if args.sweep:
        settings = [("rrf", None, k) for k in (10, 30, 60)]
        settings += [("weighted", w, 60) for w in (0.3, 0.4, 0.5, 0.6, 0.7)]
        for method, w, k in settings:
            run = {
                q: {
                    h.id: h.score
                    for h in fuse(
                        {"dense": lists["dense"][q], "lexical": lists["lexical"][q]},
                        method,
                        {"dense": w, "lexical": 1 - w} if w is not None else None,
                        k,
                    )
                }
                for q in queries
            }
            label = f"rrf k={k}" if method == "rrf" else f"weighted dense_weight={w}"
            print(f"{args.split} {label}: ndcg10 {evaluate(run, qrels)['ndcg10']:.4f}")

    emit(
        {
            "split": args.split,
            "ndcg10_dense": scores["dense"]["ndcg10"],
            "ndcg10_lexical": scores["lexical"]["ndcg10"],
            "ndcg10_hybrid": scores["hybrid"]["ndcg10"],
            "recall100_hybrid": scores["hybrid"]["recall100"],
            "docs": len(docs),
            "queries": len(queries),
        }
    )


if __name__ == "__main__":
    main()
