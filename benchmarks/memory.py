"""Hybrid memory speed at 100,000 records against raw FAISS and raw tantivy in the same run.

Search: records get random unit vectors and generated text (Zipf-distributed words), and
queries run one at a time through `HybridMemory.search(mode="hybrid")` with a query vector and
text. The raw baseline runs the same queries on a bare FAISS index of the same kind and a bare
tantivy BM25 index, and adds the two times: what a hybrid search costs before any of the
memory's own work (filters, fusion, records, access counts).

Ingest: the same short texts encoded by the raw sentence-transformers encoder, then written
through `HybridMemory.upsert` (which encodes them too, and indexes and logs them durably).

One at a time: on top of the 100,000 records, `--single-upserts` records written one upsert
each (vectors given, so it is the indexing that is timed), against a bare FAISS index of the
same kind and size adding the same vectors one at a time. Sequential: one caller, straight
on `HybridMemory.upsert` (the memory has no log here). Concurrent, as agents write: `--writers`
async callers at once through `MemoryStore` (the memory actor's class, in this process, no
Ray), each awaiting its upsert before the next, with the memory's writes logged durably from
then on (write-ahead log with fdatasync, as the store's memory is; the 100,000 loaded records
are not logged, to keep the load short).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time

import numpy as np
import tantivy

from actors import MemoryStoreConfig
from actors._private.memory_store import MemoryStore
from benchmarks._common import emit, latencies_ms, percentile
from models import Embedder, HybridMemory, MemoryConfig
from models._private.core.journal import Journal


def corpus(n: int, rng: np.random.Generator, vocab: list[str]) -> list[str]:
    ranks = np.arange(1, len(vocab) + 1)
    p = (1 / ranks) / (1 / ranks).sum()
    lengths = rng.integers(8, 24, size=n)
    words = rng.choice(len(vocab), size=int(lengths.sum()), p=p)
    out, at = [], 0
    for length in lengths:
        out.append(" ".join(vocab[w] for w in words[at : at + length]))
        at += length
    return out


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--kind", default="hnsw", choices=["flat", "hnsw", "ivf"])
    parser.add_argument("--ingest-texts", type=int, default=2000, help="texts for the ingest ratio")
    parser.add_argument("--single-upserts", type=int, default=1000, help="one-record upserts timed")
    parser.add_argument("--writers", type=int, default=16, help="concurrent callers of one-record upserts")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pu", "da", "fe"]
    vocab = sorted({"".join(rng.choice(syllables, size=rng.integers(2, 5))) for _ in range(20_000)})
    embedder = Embedder()
    dim = embedder.dim

    # -- ingest: raw encoder vs the memory's upsert on the same texts ----------------------------
    texts = corpus(args.ingest_texts, rng, vocab)
    embedder.encode(texts[:64])  # warm-up

    def raw_encode() -> float:
        t = time.perf_counter()
        embedder.encode(texts)
        return len(texts) / (time.perf_counter() - t)

    raw_before = raw_encode()
    with tempfile.TemporaryDirectory() as tmp:
        mem = HybridMemory(["bench"], MemoryConfig(path=tmp, dense_kind=args.kind), embedder=embedder)
        t = time.perf_counter()
        for at in range(0, len(texts), 500):
            mem.upsert(
                [
                    {"id": f"i{at + j}", "namespace": "bench", "text": x}
                    for j, x in enumerate(texts[at : at + 500])
                ]
            )
        mem_rate = len(texts) / (time.perf_counter() - t)
        mem.close()
    raw_rate = (raw_before + raw_encode()) / 2  # before and after, so drift hits both sides
    print(f"ingest: raw encoder {raw_rate:.0f} texts/s, memory upsert {mem_rate:.0f} texts/s")

    # -- search at scale -------------------------------------------------------------------------
    texts = corpus(args.records, rng, vocab)
    vectors = unit(rng, args.records, dim)
    memory = HybridMemory(["bench"], MemoryConfig(dense_kind=args.kind), embedder=embedder)
    t = time.perf_counter()
    for at in range(0, args.records, 5000):
        memory.upsert(
            [
                {"id": f"r{at + j}", "namespace": "bench", "text": x}
                for j, x in enumerate(texts[at : at + 5000])
            ],
            vectors=vectors[at : at + 5000],
        )
    print(f"loaded {args.records} records (given vectors) in {time.perf_counter() - t:.0f} s")

    # -- one record at a time on top of them: the memory's upsert vs a bare FAISS add -----------
    singles = unit(rng, args.single_upserts, dim)
    raw_single = memory.dense["bench"]._new()
    if args.kind == "ivf":
        raw_single.train(vectors)
    raw_single.add(vectors)
    t = time.perf_counter()
    for j in range(args.single_upserts):
        raw_single.add(singles[j : j + 1])
    raw_single_rate = args.single_upserts / (time.perf_counter() - t)
    t = time.perf_counter()
    for j in range(args.single_upserts):
        memory.upsert([{"id": f"one{j}", "namespace": "bench", "text": "one"}], vectors=singles[j : j + 1])
    single_rate = args.single_upserts / (time.perf_counter() - t)
    memory.delete([f"one{j}" for j in range(args.single_upserts)])
    del raw_single
    print(
        f"one at a time at {args.records}: raw add {raw_single_rate:.0f}/s, memory upsert {single_rate:.0f}/s"
    )

    raw = memory.dense["bench"]._new()  # a bare FAISS index of the same kind and parameters
    if args.kind == "ivf":
        raw.train(vectors)
    raw.add(vectors)
    schema_builder = tantivy.SchemaBuilder()
    schema_builder.add_text_field("id", stored=True)
    schema_builder.add_text_field("text", stored=False)
    schema = schema_builder.build()
    raw_dir = tempfile.mkdtemp()
    index = tantivy.Index(schema, path=raw_dir)
    writer = index.writer()
    for i, x in enumerate(texts):
        writer.add_document(tantivy.Document(id=f"r{i}", text=x))
    writer.commit()
    index.reload()
    searcher = index.searcher()

    q_texts = [" ".join(rng.choice(vocab[:2000], size=3)) for _ in range(args.queries)]
    q_vecs = unit(rng, args.queries, dim)
    k, candidates = 10, memory.config.candidates
    it = iter(range(10**9))

    def memory_search() -> None:
        i = next(it) % args.queries
        memory.search(q_texts[i], k, mode="hybrid", vector=q_vecs[i])

    def raw_search() -> None:
        i = next(it) % args.queries
        raw.search(q_vecs[i : i + 1], candidates)
        hits = searcher.search(index.parse_query(q_texts[i], ["text"]), candidates).hits
        [searcher.doc(addr)["id"][0] for _, addr in hits]

    latencies_ms(memory_search, 50)  # warm-up
    latencies_ms(raw_search, 50)
    mem_ms = latencies_ms(memory_search, args.queries)
    raw_ms = latencies_ms(raw_search, args.queries)
    # Concurrent writers after the searches, so that the searches run on the same index as before.
    log_dir = tempfile.mkdtemp()
    memory.wal = Journal(log_dir)  # from here on every write is logged and fdatasync'ed
    store = MemoryStore("bench", "bench", MemoryStoreConfig(), memory=memory)
    store._ensure_loop = lambda: None  # no sweeps or snapshots while timing

    async def writers() -> float:
        todo = iter(range(args.single_upserts))

        async def writer() -> None:
            for j in todo:
                rec = {"id": f"two{j}", "namespace": "bench", "text": "two"}
                await store.upsert([rec], singles[j : j + 1])

        t = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(args.writers)))
        return args.single_upserts / (time.perf_counter() - t)

    concurrent_rate = asyncio.run(writers())
    memory.wal.close()
    print(f"{args.writers} writers through the store, logged: memory upsert {concurrent_rate:.0f}/s")
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    emit(
        {
            "records": args.records,
            "kind": args.kind,
            "search_p50_ms": percentile(mem_ms, 50),
            "search_p99_ms": percentile(mem_ms, 99),
            "raw_p50_ms": percentile(raw_ms, 50),
            "raw_p99_ms": percentile(raw_ms, 99),
            "raw_encoder_texts_per_s": raw_rate,
            "memory_ingest_texts_per_s": mem_rate,
            "ingest_ratio": mem_rate / raw_rate,
            "single_upserts_per_s": single_rate,
            "raw_single_adds_per_s": raw_single_rate,
            "single_upsert_ratio": single_rate / raw_single_rate,
            "writers": args.writers,
            "concurrent_upserts_per_s": concurrent_rate,
            "concurrent_upsert_ratio": concurrent_rate / raw_single_rate,
            "rss_gb": rss_gb,
        }
    )


if __name__ == "__main__":
    main()
