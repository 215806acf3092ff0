"""Retrieval quality and speed on SciFact: Sieve against what a user would otherwise pick.

Peers, measured in the same run on the same machine:
- LangChain ``EnsembleRetriever`` = ``BM25Retriever`` (rank_bm25) + ``InMemoryVectorStore``
  with the same embedder (all-MiniLM-L6-v2), equal weights (its default);
- bm25s (BM25 alone) with a Snowball stemmer and English stop words.

Reports nDCG@10 (pytrec_eval), query latency p50/p95 and indexing throughput, and the ratios.
Run: ``make bench-retrieval`` or ``.venv/bin/python bench/retrieval.py [--data DIR] [--json]``
(needs the ``bench`` extra: ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.config import Settings  # noqa: E402
from search.embed import Embedder, TransformerEmbedder  # noqa: E402
from search.engine import SearchEngine  # noqa: E402
from search.errors import LoadError  # noqa: E402
from search.evaluate import Dataset, metrics, percentile  # noqa: E402
from search.types import Document, SearchRequest  # noqa: E402

DEPTH = 100


def timed_run(queries: dict[str, str], search) -> tuple[dict[str, list[str]], list[float]]:
    run, latencies = {}, []
    first = next(iter(queries.values()))
    search(first)  # warm-up, untimed
    for qid, text in queries.items():
        t0 = time.perf_counter()
        run[qid] = search(text)
        latencies.append((time.perf_counter() - t0) * 1000)
    return run, latencies


def row(name: str, qrels, run, latencies, index_s: float | None, n_docs: int) -> dict:
    m = metrics(qrels, run)
    return {
        "system": name,
        "ndcg@10": round(m["ndcg@10"], 4),
        "recall@100": round(m["recall@100"], 4),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
        "index_docs_per_s": round(n_docs / index_s, 1) if index_s else None,
    }


def bench_sieve(docs: list[Document], queries, qrels, embedder: Embedder, fusion: str | None):
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env({}).with_overrides(data_dir=Path(tmp))
        with SearchEngine(settings, embedder=embedder) as engine:
            t0 = time.perf_counter()
            report = engine.index(docs, batch_size=256)
            index_s = time.perf_counter() - t0
            assert not report.failed, report.failed
            for mode in ("bm25", "vector", "hybrid"):

                def search(text: str, mode: str = mode) -> list[str]:
                    req = SearchRequest(query=text, mode=mode, top_k=DEPTH, fusion=fusion)  # type: ignore[arg-type]
                    return [h.doc_id for h in engine.search(req).hits]

                run, lat = timed_run(queries, search)
                rows.append(row(f"sieve {mode}", qrels, run, lat, index_s, len(docs)))
    return rows


class FixedEmbeddings:
    """LangChain Embeddings over Sieve's embedder: the same model for both systems."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed_query(text)


def bench_langchain(docs: list[Document], queries, qrels, embedder: Embedder):
    from langchain_classic.retrievers import EnsembleRetriever
    from langchain_community.retrievers import BM25Retriever
    from langchain_core.documents import Document as LcDocument
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import InMemoryVectorStore

    class Emb(FixedEmbeddings, Embeddings):
        pass

    lc_docs = [
        LcDocument(page_content=f"{d.title}. {d.text}", metadata={"id": d.id}, id=d.id)
        for d in docs
    ]
    t0 = time.perf_counter()
    bm25 = BM25Retriever.from_documents(lc_docs, k=DEPTH)
    store = InMemoryVectorStore(Emb(embedder))
    store.add_documents(lc_docs)
    index_s = time.perf_counter() - t0
    dense = store.as_retriever(search_kwargs={"k": DEPTH})
    ensemble = EnsembleRetriever(retrievers=[bm25, dense], weights=[0.5, 0.5])

    def search(text: str) -> list[str]:
        return [d.metadata["id"] for d in ensemble.invoke(text)][:DEPTH]

    run, lat = timed_run(queries, search)
    return [row("langchain EnsembleRetriever", qrels, run, lat, index_s, len(docs))]


def bench_bm25s(docs: list[Document], queries, qrels):
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    t0 = time.perf_counter()
    corpus_tokens = bm25s.tokenize(
        [f"{d.title} {d.text}" for d in docs], stopwords="en", stemmer=stemmer, show_progress=False
    )
    retriever = bm25s.BM25()
    retriever.index(corpus_tokens, show_progress=False)
    index_s = time.perf_counter() - t0
    ids = [d.id for d in docs]

    def search(text: str) -> list[str]:
        tokens = bm25s.tokenize([text], stopwords="en", stemmer=stemmer, show_progress=False)
        results, _scores = retriever.retrieve(tokens, k=DEPTH, show_progress=False, n_threads=1)
        return [ids[i] for i in results[0]]

    run, lat = timed_run(queries, search)
    return [row("bm25s", qrels, run, lat, index_s, len(docs))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--fusion", default=None, help="Sieve fusion method (default: settings)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["langchain", "bm25s"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        dataset = Dataset.open(args.data, args.split)
    except Exception as exc:  # noqa: BLE001 - one line for a person, not a traceback
        sys.exit(f"error: {exc}")
    qrels = dataset.qrels()
    queries = dataset.queries(only=set(qrels))
    docs = [d for d in dataset.documents() if not isinstance(d, LoadError)]
    embedder = TransformerEmbedder()
    embedder.warm_up()

    rows = bench_sieve(docs, queries, qrels, embedder, args.fusion)
    if "langchain" not in args.skip:
        rows += bench_langchain(docs, queries, qrels, embedder)
    if "bm25s" not in args.skip:
        rows += bench_bm25s(docs, queries, qrels)

    by = {r["system"]: r for r in rows}
    ratios = {}
    if "langchain EnsembleRetriever" in by:
        lc, hy = by["langchain EnsembleRetriever"], by["sieve hybrid"]
        ratios["hybrid_ndcg_vs_langchain"] = round(hy["ndcg@10"] / lc["ndcg@10"], 3)
        ratios["hybrid_p50_speedup_vs_langchain"] = round(lc["p50_ms"] / hy["p50_ms"], 2)
    if "bm25s" in by:
        b, s = by["bm25s"], by["sieve bm25"]
        ratios["bm25_ndcg_vs_bm25s"] = round(s["ndcg@10"] / b["ndcg@10"], 3)
        ratios["bm25_p50_speedup_vs_bm25s"] = round(b["p50_ms"] / s["p50_ms"], 2)

    print(
        f"# retrieval bench {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()}, "
        f"{dataset.name}/{args.split}: {len(docs)} docs, {len(queries)} queries"
    )
    print("| system | nDCG@10 | Recall@100 | p50 ms | p95 ms | index docs/s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['system']} | {r['ndcg@10']:.4f} | {r['recall@100']:.4f} | {r['p50_ms']:.2f} "
            f"| {r['p95_ms']:.2f} | {r['index_docs_per_s'] or '-'} |"
        )
    for key, value in ratios.items():
        print(f"{key}: {value}")
    if args.json:
        print(json.dumps({"dataset": dataset.name, "rows": rows, "ratios": ratios}))


if __name__ == "__main__":
    main()
