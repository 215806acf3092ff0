"""Rerank work saved against nDCG@10 lost, for the per-query depth policy.

``search.rerank.depth.DepthPolicy`` skips the reranker on a query whose two
retrieval legs agree on the top document and whose fused top score stands
clear of the next by a relative ``gap``. This runs every judged query of a
split once, reranked at the full depth with the configured reranker (the
policy off), keeps each hit's fused score, leg ranks and served position, and
then replays the policy over a range of gaps offline: a skipped query keeps
its fused order, any other its reranked order. Each row is the share of
queries (so of rerank work) skipped and nDCG@10 against reranking every query.

Run (the reranker ``sieve finetune`` made, its pair scores cached after the
first run):

    SIEVE_RERANK_BACKEND=local SIEVE_RERANK_MODEL=data/models/scifact-minilm \
        .venv/bin/python bench/rerank_depth.py ../shared/data/scifact --split test --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.config import Settings  # noqa: E402
from search.engine import SearchEngine, build_reranker  # noqa: E402
from search.evaluate import Dataset, metrics, prepare_index  # noqa: E402
from search.rerank.blend import retrieval_rank  # noqa: E402
from search.rerank.depth import DepthPolicy  # noqa: E402
from search.types import Hit, LegScore, SearchRequest  # noqa: E402

GAPS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8)


def collect(settings: Settings, root: str, split: str, depth: int) -> dict[str, Any]:
    """Per judged query, its reranked head as served, with what the policy reads."""
    dataset = Dataset.open(root, split)
    qrels, queries = dataset.judged()
    batch = settings.for_batch()
    eval_settings = prepare_index(batch, dataset)
    reranker = build_reranker(batch)
    out: dict[str, Any] = {"set": dataset.name, "split": split, "qrels": qrels, "queries": {}}
    with SearchEngine(eval_settings, reranker=reranker) as engine:
        for qid, text in queries.items():
            result = engine.search(
                SearchRequest(
                    query=text,
                    top_k=depth,
                    collection="eval",
                    rerank=True,
                    rerank_depth=depth,
                )
            )
            out["queries"][qid] = {
                "reranked": result.reranked,
                "hits": [
                    {
                        "doc": h.doc_id,
                        "fused": [h.fused.score, h.fused.rank] if h.fused else None,
                        "bm25": h.bm25.rank if h.bm25 else None,
                        "vector": h.vector.rank if h.vector else None,
                    }
                    for h in result.hits
                ],
            }
        out["reranker"] = engine.collection("eval").pipeline.reranker.model_key  # type: ignore[union-attr]
    return out


def _hit(row: dict[str, Any]) -> Hit:
    fused = LegScore(*row["fused"]) if row["fused"] else None
    bm25 = LegScore(0.0, row["bm25"]) if row["bm25"] else None
    vector = LegScore(0.0, row["vector"]) if row["vector"] else None
    return Hit(row["doc"], "", "", "", 0, 0, 0.0, 0, bm25=bm25, vector=vector, fused=fused)


def curve(records: dict[str, Any], gaps: tuple[float, ...] = GAPS) -> list[dict[str, float]]:
    """One row per gap: share of queries skipped, nDCG@10, and its change from reranking all."""
    served, fused = {}, {}
    for qid, q in records["queries"].items():
        hits = [_hit(row) for row in q["hits"]]
        served[qid] = (hits, [h.doc_id for h in hits])
        in_fused_order = sorted(hits, key=retrieval_rank)
        fused[qid] = (in_fused_order, [h.doc_id for h in in_fused_order])
    qrels = records["qrels"]
    everything = metrics(qrels, {q: ids for q, (_, ids) in served.items()})["ndcg@10"]
    none = metrics(qrels, {q: ids for q, (_, ids) in fused.items()})["ndcg@10"]
    rows = [{"gap": -1.0, "skipped": 0.0, "ndcg@10": everything, "delta": 0.0}]
    for gap in gaps:
        policy = DepthPolicy(gap)
        run, skipped = {}, 0
        for qid, (hits, ids) in fused.items():
            if policy.sure(hits):
                run[qid] = ids
                skipped += 1
            else:
                run[qid] = served[qid][1]
        ndcg = metrics(qrels, run)["ndcg@10"]
        rows.append(
            {
                "gap": gap,
                "skipped": skipped / max(1, len(fused)),
                "ndcg@10": ndcg,
                "delta": ndcg - everything,
            }
        )
    rows.append({"gap": float("inf"), "skipped": 1.0, "ndcg@10": none, "delta": none - everything})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--split", default="test")
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--records", help="read (or write, when absent) this JSON of the runs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    path = Path(args.records) if args.records else None
    if path is not None and path.is_file():
        records = json.loads(path.read_text())
    else:
        records = collect(Settings.from_env(), args.dataset, args.split, args.depth)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(records))
    rows = curve(records)
    if args.json:
        print(json.dumps({"set": records["set"], "split": records["split"], "rows": rows}))
        return
    print(f"{records['set']} {records['split']}, {len(records['queries'])} queries")
    print("| gap | queries skipped | nDCG@10 | change |")
    print("|---|---|---|---|")
    for row in rows:
        names = {-1.0: "off (rerank all)", float("inf"): "skip all"}
        gap = names.get(row["gap"], f"{row['gap']:g}")
        print(f"| {gap} | {row['skipped']:.1%} | {row['ndcg@10']:.4f} | {row['delta']:+.4f} |")


if __name__ == "__main__":
    main()
