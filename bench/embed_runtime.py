"""The embedder's runtimes side by side: torch, ONNX Runtime, ONNX Runtime int8.

For each runtime of ``TransformerEmbedder`` (``SIEVE_EMBED_RUNTIME``), in one run:

- **query latency**: p50/p95 of embedding each test query alone, the runtimes
  taking turns query by query so that load on a shared machine falls on all alike;
- **corpus throughput**: documents per second embedding the corpus (title and
  text, batches of ``--batch``, as the indexer sends them);
- **quality**: nDCG@10 and Recall@100 of an exact cosine search over those
  vectors on the split's judged queries (the vector leg without the ANN index,
  so only the runtime differs), and the cosine between each runtime's document
  vectors and torch's.

Run: ``python bench/embed_runtime.py [--data ../shared/data/scifact] [--split test]
[--docs 0] [--out FILE.json]``. ``--docs N`` embeds only the first N documents
(quality is then over a partial corpus: for timing only). The ONNX graphs are
exported on first use and cached (``search/onnx_runtime.py``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.embed import TransformerEmbedder  # noqa: E402
from search.evaluate import Dataset, metrics, percentile  # noqa: E402
from search.types import Document  # noqa: E402

RUNTIMES = ("torch", "onnx", "onnx-int8")
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"


def corpus(dataset: Dataset, limit: int) -> tuple[list[str], list[str]]:
    """Document ids and the texts the indexer would embed (title, then text)."""
    ids, texts = [], []
    for doc in dataset.documents():
        if not isinstance(doc, Document):
            continue
        ids.append(doc.id)
        texts.append(f"{doc.title}\n{doc.text}".strip())
        if limit and len(ids) >= limit:
            break
    return ids, texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SCIFACT)
    parser.add_argument("--split", default="test")
    parser.add_argument("--docs", type=int, default=0, help="first N documents (0: all)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    dataset = Dataset.open(args.data, args.split)
    qrels = dataset.qrels()
    queries = dataset.queries(set(qrels))
    ids, texts = corpus(dataset, args.docs)
    embedders = {r: TransformerEmbedder(runtime=r, batch_size=args.batch) for r in RUNTIMES}
    for embedder in embedders.values():
        embedder.warm_up()
        embedder.embed(["warm the first batch"])  # graph optimisation runs on first use

    latencies: dict[str, list[float]] = {r: [] for r in RUNTIMES}
    query_vectors: dict[str, dict[str, np.ndarray]] = {r: {} for r in RUNTIMES}
    for qid, text in queries.items():
        for runtime, embedder in embedders.items():
            started = time.perf_counter()
            vector = embedder.embed([text])[0]
            latencies[runtime].append((time.perf_counter() - started) * 1000)
            query_vectors[runtime][qid] = vector

    report: dict[str, dict[str, float]] = {}
    doc_vectors: dict[str, np.ndarray] = {}
    for runtime, embedder in embedders.items():
        started = time.perf_counter()
        doc_vectors[runtime] = embedder.embed(texts)
        seconds = time.perf_counter() - started
        matrix = doc_vectors[runtime]
        run: dict[str, list[str]] = {}
        for qid, vector in query_vectors[runtime].items():
            scores = matrix @ vector
            top = np.argsort(-scores)[:100]
            run[qid] = [ids[i] for i in top]
        quality = metrics(qrels, run)
        report[runtime] = {
            "query_p50_ms": round(statistics.median(latencies[runtime]), 2),
            "query_p95_ms": round(percentile(latencies[runtime], 95), 2),
            "docs_per_s": round(len(texts) / seconds, 1),
            "ndcg@10": round(quality["ndcg@10"], 4),
            "recall@100": round(quality["recall@100"], 4),
        }
    for runtime in RUNTIMES:
        cosines = (doc_vectors[runtime] * doc_vectors["torch"]).sum(axis=1)
        report[runtime]["min_cosine_vs_torch"] = round(float(cosines.min()), 4)
        report[runtime]["mean_cosine_vs_torch"] = round(float(cosines.mean()), 4)

    out = {
        "data": dataset.name,
        "split": args.split,
        "queries": len(queries),
        "documents": len(texts),
        "batch": args.batch,
        "runtimes": report,
    }
    print(f"{dataset.name} {args.split}: {len(queries)} queries, {len(texts)} documents")
    print("| runtime | query p50 ms | p95 | docs/s | nDCG@10 | Recall@100 | min cos vs torch |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for runtime, row in report.items():
        print(
            f"| {runtime} | {row['query_p50_ms']} | {row['query_p95_ms']} | {row['docs_per_s']} "
            f"| {row['ndcg@10']} | {row['recall@100']} | {row['min_cosine_vs_torch']} |"
        )
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
