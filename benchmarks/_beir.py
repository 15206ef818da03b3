"""BEIR-format datasets (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) and their metrics.

Metrics come from pytrec_eval (trec_eval's own C code, as BEIR itself uses), not from
formulas of our own.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BeirDataset", "evaluate", "load_beir"]


@dataclass
class BeirDataset:
    """A corpus, its queries and relevance judgments per split."""

    corpus: dict[str, dict[str, str]]  # doc id -> {"title", "text"}
    queries: dict[str, str]  # query id -> text
    qrels: dict[str, dict[str, dict[str, int]]]  # split -> query id -> doc id -> grade

    def split(self, name: str) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
        """The queries that have judgments in split `name`, and those judgments."""
        qrels = self.qrels[name]
        return {q: self.queries[q] for q in qrels if q in self.queries}, qrels


def load_beir(path: str | Path) -> BeirDataset:
    """Reads a BEIR-format directory."""
    root = Path(path)
    corpus = {}
    with open(root / "corpus.jsonl") as f:
        for line in f:
            d = json.loads(line)
            corpus[str(d["_id"])] = {"title": d.get("title", ""), "text": d.get("text", "")}
    queries = {}
    with open(root / "queries.jsonl") as f:
        for line in f:
            q = json.loads(line)
            queries[str(q["_id"])] = q["text"]
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for tsv in sorted((root / "qrels").glob("*.tsv")):
        split = qrels.setdefault(tsv.stem, {})
        with open(tsv) as f:
            for row in csv.DictReader(f, delimiter="\t"):
                split.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = int(row["score"])
    return BeirDataset(corpus, queries, qrels)


def evaluate(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean nDCG@10 and recall@100 of `run` (query id -> doc id -> score) over `qrels`' queries."""
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"})
    per_query = evaluator.evaluate({q: run.get(q, {}) for q in qrels})
    n = max(1, len(qrels))
    return {
        "ndcg10": sum(m["ndcg_cut_10"] for m in per_query.values()) / n,
        "recall100": sum(m["recall_100"] for m in per_query.values()) / n,
    }
