"""Multi-hop retrieval through the facts service over HTTP, on a BEIR-format dataset (default:
HotpotQA's pooled paragraphs).

The run starts a local Ray and the facts service, ingests the corpus through
POST …/documents/batch (spaCy extraction in the background) and waits for its jobs, then asks
every question through POST /v1/search in each mode, one request at a time (the mode that
asks a question first rotates: `*_first_seen` figures are searches that encode). In the same run,
in this process: the raw encoder over the corpus (the ingest's yardstick), and BM25 alone and
the dense encoder alone over passages (the baselines), in the memory's own indexes. Recall@2
and @5 of the supporting paragraphs and nDCG@10 come from pytrec_eval. Tune on `--split dev`;
report `test`. The resolution check reads the store's SQLite file (read-only) after ingest.
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from benchmarks._beir import load_beir
from benchmarks._common import emit, percentile

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "hotpotqa"
MODES = ("passages", "facts", "hybrid", "graph")
NAMESPACE = "bench"
_QUALIFIER = re.compile(r"\s*\([^)]*\)\s*$")


def metrics(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"recall.2", "recall.5", "ndcg_cut.10"})
    per_query = evaluator.evaluate({q: run.get(q, {}) for q in qrels})
    n = max(1, len(qrels))
    return {
        name: sum(m[key] for m in per_query.values()) / n
        for name, key in (("recall2", "recall_2"), ("recall5", "recall_5"), ("ndcg10", "ndcg_cut_10"))
    }


def ranking(found: dict[str, Any]) -> dict[str, float]:
    """Documents by score: passages' own, or in facts mode the documents its facts came from,
    in the facts' order."""
    if found["passages"]:
        return {h["document_id"]: h["score"] for h in found["passages"]}
    run: dict[str, float] = {}
    for rank, h in enumerate(found["facts"]):
        for p in h["fact"]["provenance"]:
            run.setdefault(p["document_id"], 1.0 / (1 + rank))
    return run


def baselines(texts: list[str], ids: list[str], vectors: Any, queries: dict[str, str]) -> dict[str, dict]:
    """BM25 alone and the dense encoder alone over the passages, in the memory's indexes."""
    from models import HybridMemory

    memory = HybridMemory(["passages"])
    records = [{"id": i, "namespace": "passages", "text": t} for i, t in zip(ids, texts, strict=True)]
    memory.upsert(records, vectors=vectors)
    return {
        name: {
            qid: {h.record.id: h.score for h in memory.search(text, 10, mode=index)}
            for qid, text in queries.items()
        }
        for name, index in (("bm25", "lexical"), ("dense", "dense"))
    }


def resolution(db_path: str, titles: list[str]) -> dict[str, Any]:
    """How entity resolution fared on the corpus: exact-name duplicates missed (two entities of
    one type and one normalised name), names merged fuzzily, and of those the merges of two
    distinct article titles (two different things made one), with a sample for reading."""
    from models._private.facts.resolution import normalise

    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    entities = db.execute("SELECT id, name, type FROM entities").fetchall()
    groups = Counter((t, normalise(n)) for _, n, t in entities)
    aliases = db.execute(
        "SELECT e.name, e.type, a.alias FROM aliases a JOIN entities e ON e.id = a.entity_id"
    ).fetchall()
    fuzzy = [(n, t, a) for n, t, a in aliases if normalise(a) != normalise(n)]
    title_names = {normalise(_QUALIFIER.sub("", t)) for t in titles}
    two_titles = [(n, t, a) for n, t, a in fuzzy if {normalise(n), normalise(a)} <= title_names]
    # Titles named by more than one document: each must be one entity per type.
    mentioned = db.execute(
        "SELECT e.name, e.type, count(DISTINCT m.document_id) FROM entities e "
        "JOIN mentions m ON m.entity_id = e.id GROUP BY e.id"
    ).fetchall()
    shared_titles = sum(1 for n, _, docs in mentioned if docs > 1 and normalise(n) in title_names)
    db.close()
    for n, t, a in fuzzy[:25]:
        print(f"fuzzy merge ({t}): {a!r} -> {n!r}", file=sys.stderr)
    return {
        "same_name_duplicates": sum(c - 1 for c in groups.values() if c > 1),
        "titles_merged": shared_titles,
        "fuzzy_merges": len(fuzzy),
        "fuzzy_merges_two_titles": len(two_titles),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(DEFAULT), help="a BEIR-format directory")
    parser.add_argument("--split", default="dev", help="qrels split (tune on dev, report test)")
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--limit", type=int, default=0, help="only the first N documents (a smoke run)")
    parser.add_argument("--batch", type=int, default=256, help="documents per ingest request")
    parser.add_argument(
        "--keep",
        default=None,
        help="a directory for the service's data: made on the first run, reopened by later ones "
        "(which then measure search only: the ingest figures are left out)",
    )
    parser.add_argument("--graph-weight", type=float, default=0.6)
    parser.add_argument("--rerank", choices=["distance", "hop", "pagerank"], default="hop")
    parser.add_argument("--torch-threads", type=int, default=None, help="the shard's (default: its cores)")
    parser.add_argument("--port", type=int, default=8797)
    args = parser.parse_args()

    data = load_beir(args.dataset)
    queries, qrels = data.split(args.split)
    docs = list(data.corpus.items())[: args.limit or None]
    ids, titles = [i for i, _ in docs], [d["title"] for _, d in docs]
    texts = [f"{d['title']}\n{d['text']}" for _, d in docs]
    path = args.keep or tempfile.mkdtemp(prefix="facts-bench-")
    reused = Path(path, NAMESPACE, "facts.sqlite").exists()

    # The raw encoder first, with the machine to itself; its vectors serve the dense baseline.
    from models import Embedder

    embedder = Embedder()
    embedder.encode(texts[:64])  # warm
    t = time.perf_counter()
    vectors = embedder.encode(texts)
    raw_encoder = len(texts) / (time.perf_counter() - t)
    runs = baselines(texts, ids, vectors, queries)
    del embedder, vectors

    import ray

    from cluster._private.connection import HEAD_ENV
    from cluster._private.facts_client import FactsClient
    from serve import FactsServiceConfig, deploy

    for key, value in HEAD_ENV.items():  # the one-hop ingress `swarm up` runs with
        os.environ.setdefault(key, value)
    ray.init(namespace="bench-facts", logging_level="WARNING", log_to_driver=False)
    namespace = {
        "graph_weight": args.graph_weight,
        "graph_rerank": args.rerank,
        "torch_threads": args.torch_threads,
    }
    # Auth off: the figures are the service's own (keys cost 0.13 ms; benchmarks/README.md).
    config = FactsServiceConfig(
        port=args.port, path=path, namespaces={NAMESPACE: namespace}, auth={"enabled": False}
    )
    facts = FactsClient(deploy(config, app_name="bench-facts"))
    out: dict[str, Any] = {"split": args.split, "depth": args.depth, **namespace}
    if not reused:
        documents = [{"id": i, "title": d["title"], "text": d["text"]} for i, d in docs]
        t = time.perf_counter()
        jobs = facts.ingest(documents, NAMESPACE, args.batch)
        stored = time.perf_counter() - t
        progress = facts.wait(jobs, NAMESPACE, poll_s=1.0)
        ingest = time.perf_counter() - t
        out.update(
            raw_encoder_docs_per_s=raw_encoder,
            store_docs_per_s=len(docs) / stored,
            ingest_docs_per_s=len(docs) / ingest,
            ingest_to_raw_encoder=len(docs) / ingest / raw_encoder,
            extraction_failed=progress.get("failed", 0),
        )

    # Each question is asked in every mode, one after the other; the mode that asks it first
    # rotates, so that every mode has its share of first-seen questions (whose vector the
    # namespace has not cached: the encoder runs) besides repeats (`*_first_seen` figures).
    latency: dict[str, list[float]] = {mode: [] for mode in MODES}
    first_seen: dict[str, list[float]] = {mode: [] for mode in MODES}
    for mode in MODES:
        runs[mode] = {}
    with httpx.Client(base_url=facts.url + "/", timeout=60) as http:
        for title in titles[:10]:  # warm the service's caches and connections (not a question)
            http.post("search", json={"query": title, "mode": "graph"}).raise_for_status()
        for i, (qid, text) in enumerate(queries.items()):
            for j in range(len(MODES)):
                mode = MODES[(i + j) % len(MODES)]
                body = {"query": text, "k": 10, "mode": mode, "depth": args.depth}
                t = time.perf_counter()
                r = http.post("search", json=body)
                took = (time.perf_counter() - t) * 1000
                r.raise_for_status()
                latency[mode].append(took)
                if j == 0:
                    first_seen[mode].append(took)
                runs[mode][qid] = ranking(r.json())
        stats = http.get(f"namespaces/{NAMESPACE}").json()
    for name, run in runs.items():
        for metric, value in metrics(run, qrels).items():
            out[f"{metric}_{name}"] = value
    out.update(
        docs=len(docs),
        queries=len(queries),
        entities=stats["entities"],
        facts=stats["facts"],
        search_p50_ms=percentile([ms for took in latency.values() for ms in took], 50),
        search_p99_ms=percentile([ms for took in latency.values() for ms in took], 99),
        **{f"search_p50_ms_{mode}": percentile(took, 50) for mode, took in latency.items()},
        search_p50_ms_first_seen=percentile([ms for took in first_seen.values() for ms in took], 50),
        search_p99_ms_first_seen=percentile([ms for took in first_seen.values() for ms in took], 99),
        **{f"search_p50_ms_first_seen_{mode}": percentile(took, 50) for mode, took in first_seen.items()},
        **resolution(str(Path(path, NAMESPACE, "facts.sqlite")), titles),
    )
    facts.close()
    ray.shutdown()
    emit(out)


if __name__ == "__main__":
    main()
