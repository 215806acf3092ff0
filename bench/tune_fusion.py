"""Tune the fusion method and weights on a train split, report on the test split.

Each leg (BM25, vector) is run once per query to depth 100; every fusion
candidate is then applied offline with the same pure functions the pipeline
uses, so the grid is cheap. The winner on ``--tune-split`` is reported on
``--report-split`` next to plain RRF, so the gain is a measured difference.

Run: ``.venv/bin/python bench/tune_fusion.py [--data ../shared/data/scifact] [--json]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search import fusion  # noqa: E402
from search.config import Settings  # noqa: E402
from search.engine import SearchEngine  # noqa: E402
from search.evaluate import Dataset, metrics, prepare_index  # noqa: E402
from search.types import SearchRequest  # noqa: E402

DEPTH = 100
WEIGHTS = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.2, 1.5, 2.0]


def leg_runs(engine: SearchEngine, queries: dict[str, str], mode: str) -> dict:
    out = {}
    for qid, text in queries.items():
        hits = engine.search(
            SearchRequest(query=text, mode=mode, top_k=DEPTH, collection="eval")
        ).hits  # type: ignore[arg-type]
        out[qid] = [(h.doc_id, h.score) for h in hits]
    return out


def fused_run(method: str, bm25: dict, vec: dict, weights, k: int = 60) -> dict[str, list[str]]:
    return {
        qid: [d for d, _ in fusion.fuse(method, [bm25[qid], vec[qid]], weights, k=k)[:DEPTH]]
        for qid in bm25
    }


def candidates():
    yield ("rrf", (1.0, 1.0), 60)
    for k in (10, 20, 40, 60, 100):
        for wv in WEIGHTS:
            yield ("weighted_rrf", (1.0, wv), k)
    for method in ("minmax", "zscore", "dbsf"):
        for wv in WEIGHTS:
            yield (method, (1.0, wv), 60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--tune-split", default="train")
    parser.add_argument("--report-split", default="test")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    settings = Settings.from_env()
    tune = Dataset.open(args.data, args.tune_split)
    report = Dataset.open(args.data, args.report_split)
    eval_settings = prepare_index(settings, tune)
    splits = {}
    with SearchEngine(eval_settings) as engine:
        for ds in (tune, report):
            qrels = ds.qrels()
            queries = ds.queries(only=set(qrels))
            splits[ds.split] = (
                qrels,
                leg_runs(engine, queries, "bm25"),
                leg_runs(engine, queries, "vector"),
            )

    qrels, bm25, vec = splits[args.tune_split]
    scored = []
    for method, weights, k in candidates():
        ndcg = metrics(qrels, fused_run(method, bm25, vec, weights, k))["ndcg@10"]
        scored.append((ndcg, method, weights, k))
    scored.sort(key=lambda x: -x[0])
    best = scored[0]

    r_qrels, r_bm25, r_vec = splits[args.report_split]
    baseline = metrics(r_qrels, fused_run("rrf", r_bm25, r_vec, (1.0, 1.0)))["ndcg@10"]
    chosen = metrics(r_qrels, fused_run(best[1], r_bm25, r_vec, best[2], best[3]))["ndcg@10"]
    per_method = {}
    for ndcg, method, weights, k in scored:
        per_method.setdefault(method, (ndcg, weights, k))
    print(f"tuned on {args.tune_split} ({len(qrels)} queries), reported on {args.report_split}")
    print("| method | best weights (bm25, vector) | k | train nDCG@10 | test nDCG@10 |")
    print("|---|---|---|---|---|")
    for method, (ndcg, weights, k) in per_method.items():
        test = metrics(r_qrels, fused_run(method, r_bm25, r_vec, weights, k))["ndcg@10"]
        print(f"| {method} | {weights} | {k} | {ndcg:.4f} | {test:.4f} |")
    print(f"plain RRF on {args.report_split}: {baseline:.4f}")
    print(f"chosen {best[1]} weights={best[2]} k={best[3]} on {args.report_split}: {chosen:.4f}")
    if args.json:
        print(
            json.dumps(
                {
                    "method": best[1],
                    "weights": best[2],
                    "k": best[3],
                    "test_ndcg@10": chosen,
                    "rrf_test_ndcg@10": baseline,
                }
            )
        )


if __name__ == "__main__":
    main()
