"""Embedded vector index (Qdrant Edge) against exact search on the same SciFact embeddings.

For every SciFact test query, top-100 chunks by HNSW are compared with the
top-100 by exact search over the same shard: recall@100 = |HNSW ∩ exact| / 100.
Rows: Sieve's default policy (exact below SIEVE_EXACT_SEARCH_THRESHOLD
points, HNSW with SIEVE_HNSW_EF above), HNSW with Qdrant's default search
settings, and HNSW at several ``hnsw_ef`` values, each with its p50 latency.

Run: ``.venv/bin/python bench/ann_recall.py [--data ../shared/data/scifact] [--json]``
(indexes SciFact into ``<data_dir>/eval/scifact`` first if it is not there).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import qdrant_edge as qe  # noqa: E402

from search.config import Settings  # noqa: E402
from search.embed import TransformerEmbedder  # noqa: E402
from search.evaluate import Dataset, percentile, prepare_index  # noqa: E402

TOP = 100


def query_ids(shard, vector: list[float], params) -> tuple[set, float]:
    request = qe.QueryRequest(
        limit=TOP, query=qe.Query.Nearest(vector), with_payload=False, params=params
    )
    t0 = time.perf_counter()
    points = shard.query(request)
    return {p.id for p in points}, (time.perf_counter() - t0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    settings = Settings.from_env()
    dataset = Dataset.open(args.data, "test")
    eval_settings = prepare_index(settings, dataset)
    queries = list(dataset.queries(only=set(dataset.qrels())).values())
    embedder = TransformerEmbedder(settings.embed_model)
    vectors = [list(map(float, v)) for v in embedder.embed(queries)]

    path = eval_settings.data_dir / "collections" / "eval" / "qdrant-edge"
    shard = qe.EdgeShard.load(str(path))
    info = shard.info()
    points, indexed = info.points_count, info.indexed_vectors_count
    truth = [query_ids(shard, v, qe.SearchParams(exact=True))[0] for v in vectors]

    def measure(params) -> dict:
        recalls, latencies = [], []
        for vector, exact in zip(vectors, truth, strict=True):
            ids, ms = query_ids(shard, vector, params)
            recalls.append(len(ids & exact) / max(1, len(exact)))
            latencies.append(ms)
        return {
            "recall@100": round(sum(recalls) / len(recalls), 4),
            "p50_ms": round(percentile(latencies, 50), 3),
            "p95_ms": round(percentile(latencies, 95), 3),
        }

    default_policy = (
        qe.SearchParams(exact=True)
        if points < settings.exact_search_threshold
        else qe.SearchParams(hnsw_ef=max(settings.hnsw_ef, TOP))
    )
    rows = {
        "exact": measure(qe.SearchParams(exact=True)),
        "sieve default policy": measure(default_policy),
        "hnsw, qdrant default params": measure(qe.SearchParams()),
    }
    for ef in (100, 128, 256, 512):
        rows[f"hnsw ef={ef}"] = measure(qe.SearchParams(hnsw_ef=ef))
    shard.close()

    policy = "exact" if points < settings.exact_search_threshold else f"hnsw ef={settings.hnsw_ef}"
    print(
        f"SciFact chunks: {points} points ({indexed} in HNSW), {len(queries)} test queries; "
        f"Sieve's policy at this size: {policy} "
        f"(threshold {settings.exact_search_threshold})"
    )
    print("| search | recall@100 vs exact | p50 ms | p95 ms |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['recall@100']:.4f} | {row['p50_ms']:.3f} | {row['p95_ms']:.3f} |")
    if args.json:
        print(json.dumps({"points": points, "indexed": indexed, "policy": policy, "rows": rows}))


if __name__ == "__main__":
    main()
