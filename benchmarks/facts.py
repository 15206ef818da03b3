"""Multi-hop retrieval with the facts library on a BEIR-format dataset (default: HotpotQA).

The corpus goes in through `FactsBase.add_documents` and the spaCy extractor; questions go
through `FactsBase.search` in each mode. The baselines run in the same process on the same
indexes: BM25 alone and the dense encoder alone, over passages. Recall@2 and @5 of the
supporting paragraphs and nDCG@10 come from pytrec_eval. Tune on `--split dev`; report `test`.

In-process for now: the HTTP facts service, which the issue measures through, comes next.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks._beir import load_beir
from benchmarks._common import emit, percentile
from models import DocumentIn, Embedder, FactsBase, SpacyExtractor

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "hotpotqa"
MODES = ("passages", "facts", "hybrid", "graph")


def metrics(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"recall.2", "recall.5", "ndcg_cut.10"})
    per_query = evaluator.evaluate({q: run.get(q, {}) for q in qrels})
    n = max(1, len(qrels))
    return {
        name: sum(m[key] for m in per_query.values()) / n
        for name, key in (("recall2", "recall_2"), ("recall5", "recall_5"), ("ndcg10", "ndcg_cut_10"))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(DEFAULT), help="a BEIR-format directory")
    parser.add_argument("--split", default="dev", help="qrels split (tune on dev, report test)")
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--limit", type=int, default=0, help="only the first N documents (a smoke run)")
    parser.add_argument(
        "--keep",
        default=None,
        help="a directory for the ingested base: made on the first run, reopened by later ones "
        "(which then measure search only: the ingest figures are left out)",
    )
    parser.add_argument("--graph-weight", type=float, default=0.6)
    parser.add_argument("--rerank", choices=["distance", "hop"], default="hop")
    args = parser.parse_args()

    data = load_beir(args.dataset)
    queries, qrels = data.split(args.split)
    docs = list(data.corpus.items())[: args.limit or None]
    texts = [f"{d['title']}\n{d['text']}" for _, d in docs]
    embedder = Embedder()
    path = args.keep or tempfile.mkdtemp(prefix="facts-bench-")
    reused = Path(path, "facts.sqlite").exists()
    kb = FactsBase(
        path,
        embedder=embedder,
        extractor=SpacyExtractor(),
        graph_weight=args.graph_weight,
        graph_rerank=args.rerank,
    )
    if not reused:
        embedder.encode(texts[:64])  # warm
        t = time.perf_counter()
        embedder.encode(texts)
        raw_encoder = len(texts) / (time.perf_counter() - t)
        t = time.perf_counter()
        for at in range(0, len(docs), 256):
            batch = docs[at : at + 256]
            kb.add_documents([DocumentIn(id=i, title=d["title"], text=d["text"]) for i, d in batch])
        stored = time.perf_counter() - t
        while kb.extract_pending(256):
            pass
        ingest = time.perf_counter() - t

    runs: dict[str, dict[str, dict[str, float]]] = {}
    latency: list[float] = []
    for mode in MODES:
        run = runs[mode] = {}
        for qid, text in queries.items():
            t = time.perf_counter()
            result = kb.search(text, 10, mode, depth=args.depth)
            latency.append((time.perf_counter() - t) * 1000)
            if result.passages:
                run[qid] = {h.document_id: h.score for h in result.passages}
            else:  # facts mode: the documents its facts came from, in the facts' order
                run[qid] = {}
                for rank, h in enumerate(result.facts):
                    for p in h.fact.provenance:
                        run[qid].setdefault(p["document_id"], 1.0 / (1 + rank))
    for baseline, index in (("bm25", "lexical"), ("dense", "dense")):
        runs[baseline] = {
            qid: {
                h.record.metadata["document_id"]: h.score
                for h in kb.memory.search(text, 10, mode=index, filter={"kind": "passage"})
            }
            for qid, text in queries.items()
        }
    out: dict[str, object] = {
        "split": args.split,
        "depth": args.depth,
        "graph_weight": args.graph_weight,
        "rerank": args.rerank,
    }
    for name, run in runs.items():
        for metric, value in metrics(run, qrels).items():
            out[f"{metric}_{name}"] = value
    stats = kb.store.stats()
    out.update(
        docs=len(docs),
        queries=len(queries),
        entities=stats["entities"],
        facts=stats["facts"],
        search_p50_ms=percentile(latency, 50),
        search_p99_ms=percentile(latency, 99),
    )
    if not reused:
        out.update(
            raw_encoder_docs_per_s=raw_encoder,
            store_docs_per_s=len(docs) / stored,
            ingest_docs_per_s=len(docs) / ingest,
            ingest_to_raw_encoder=len(docs) / ingest / raw_encoder,
        )
    kb.close()
    emit(out)


if __name__ == "__main__":
    main()
