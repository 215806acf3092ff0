"""Does `/v1/context` abstain when the knowledge base lacks the answer? And is relevance calibrated?

On a BEIR data set whose corpus ``sieve eval`` has indexed, with the configured
(calibrated) reranker:

1. **Calibration.** Every test query's hybrid top ``--depth``, reranked, through
   ``/v1/search``: the expected calibration error (10 bins) of the hits'
   ``relevance`` against the judgements (unjudged = not relevant).
2. **The threshold, from validation.** The same for the queries the model's
   fine-tune held out (its card lists them; else ``--val-split``). With
   ``--rule separate`` (the default) those queries are split in halves as the
   test queries are below, the judged documents of one half removed from a
   copy of the index, and ``min_relevance`` is the value that best separates
   the halves: the largest (share abstaining without the answer) minus (share
   abstaining with it), where a query abstains when its best hit's relevance
   is below the value. With ``--rule keep``, it is the highest value that still
   keeps a judged-relevant passage for ``--keep`` (default 90%) of them.
3. **Abstaining.** A copy of the index loses the judged documents of half the test
   queries (chosen by a seeded hash; queries sharing a judged document with the
   other half are left out of both). Through ``/v1/context`` with that
   ``min_relevance``, the share of each half that abstains: queries whose answer was
   removed should abstain far more often than queries whose answer is there.

Run: ``SIEVE_RERANK_MODEL=MODEL_DIR .venv/bin/python
bench/abstain.py ../shared/data/scifact [--json]``. The index is the one
``sieve eval`` built (``<SIEVE_DATA_DIR>/eval/<name>``), copied, never changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from api.app import create_app  # noqa: E402
from api.settings import ApiSettings, ServiceSettings  # noqa: E402
from search.calibrate import reranker_model  # noqa: E402
from search.config import Settings  # noqa: E402
from search.engine import SearchEngine  # noqa: E402
from search.evaluate import Dataset, prepare_index  # noqa: E402
from search.finetune.holdout import held_out_ids  # noqa: E402
from search.model_folders import read_card  # noqa: E402
from search.rerank.calibration import expected_calibration_error  # noqa: E402


def relevances(
    client: Any, queries: dict[str, str], depth: int
) -> dict[str, list[tuple[str, float]]]:
    """Each query's reranked hits as (doc id, calibrated relevance), best first."""
    out = {}
    for qid, text in queries.items():
        body = {"query": text, "collection": "eval", "top_k": depth, "rerank_depth": depth}
        response = client.post("/v1/search", json=body)
        if response.status_code != 200 or not response.json["reranked"]:
            raise SystemExit(f"error: search answered {response.status_code}: {response.json}")
        hits = [(h["doc_id"], (h["rerank"] or {}).get("relevance")) for h in response.json["hits"]]
        if any(r is None for _, r in hits):
            raise SystemExit("error: hits carry no relevance: calibrate the reranker first")
        out[qid] = hits
    return out


def threshold(
    hits: dict[str, list[tuple[str, float]]], qrels: dict[str, dict[str, int]], keep: float
) -> float:
    """The highest min_relevance that keeps a relevant passage for ``keep`` of the queries."""
    best = sorted(
        (max((r for d, r in hits[q] if qrels[q].get(d, 0) > 0), default=0.0) for q in hits),
        reverse=True,
    )
    return best[max(0, int(len(best) * keep) - 1)]


def separating(present: list[float], removed: list[float]) -> tuple[float, float]:
    """The min_relevance that best separates queries with their answer from those
    without, from each query's best relevance: (value, separation). A query abstains
    when its best relevance is below the value; ties keep the lower value."""
    best, gap = 0.0, 0.0
    for value in sorted(set(present) | set(removed)):
        # Just above an observed value, so that value abstains.
        cut = value + 1e-9
        share_removed = sum(r < cut for r in removed) / max(1, len(removed))
        share_present = sum(r < cut for r in present) / max(1, len(present))
        if share_removed - share_present > gap + 1e-12:
            best, gap = cut, share_removed - share_present
    return best, gap


def top_relevance(hits: dict[str, list[tuple[str, float]]]) -> dict[str, float]:
    return {q: max((r for _, r in h), default=0.0) for q, h in hits.items()}


def halves(qrels: dict[str, dict[str, int]], seed: int) -> tuple[list[str], list[str]]:
    """(kept, removed) query ids, split by a seeded hash; a kept query judged relevant
    a document that a removed one loses is left out (its answer would be gone too)."""

    def removed(qid: str) -> bool:
        return int(hashlib.sha256(f"{seed}:{qid}".encode()).hexdigest(), 16) % 2 == 1

    gone = {d for q in qrels if removed(q) for d, g in qrels[q].items() if g > 0}
    kept = [q for q in qrels if not removed(q) and not gone & set(qrels[q])]
    return sorted(kept), sorted(q for q in qrels if removed(q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--val-split", default="train", help="used when no card lists held-out ids")
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--context-top-k", type=int, default=50, help="the reranked head")
    parser.add_argument("--rule", choices=("separate", "keep"), default="separate")
    parser.add_argument("--keep", type=float, default=0.9, help="for --rule keep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    base = Settings.from_env(os.environ).for_batch()
    model = reranker_model(base)
    test = Dataset.open(args.dataset, args.split)
    qrels, queries = test.judged()
    indexed = prepare_index(base, test)  # reused: sieve eval built it
    val = Dataset.open(args.dataset, args.val_split)
    val_qrels, val_queries = val.judged()
    held = held_out_ids(
        read_card(model.folder), val.name, val.corpus_digest(), args.val_split, list(val_queries)
    )
    if held is not None:
        val_queries = {q: val_queries[q] for q in held}

    api = ApiSettings(rate_limit="")
    with tempfile.TemporaryDirectory(prefix="sieve-abstain-") as scratch:

        def copy_of_index(name: str) -> Settings:
            copy = Path(scratch) / name
            shutil.copytree(indexed.data_dir, copy)
            return indexed.with_overrides(data_dir=copy)

        separation = None
        with SearchEngine(settings := copy_of_index("validation")) as engine:
            client = create_app(ServiceSettings(engine=settings, api=api), engine).test_client()
            validated = relevances(client, val_queries, args.depth)
            val_judged = {q: val_qrels[q] for q in validated}
            if args.rule == "keep":
                floor = threshold(validated, val_judged, args.keep)
                rule = f"keep a relevant passage for {args.keep:.0%}"
            else:
                val_kept, val_removed = halves(val_judged, args.seed)
                engine.delete(
                    sorted({d for q in val_removed for d, g in val_judged[q].items() if g > 0}),
                    collection="eval",
                )
                without = relevances(client, {q: val_queries[q] for q in val_removed}, args.depth)
                present = top_relevance({q: validated[q] for q in val_kept})
                floor, separation = separating(
                    list(present.values()), list(top_relevance(without).values())
                )
                rule = (
                    f"best separates {len(val_kept)} with their answer from "
                    f"{len(val_removed)} without"
                )

        with SearchEngine(settings := copy_of_index("test")) as engine:
            client = create_app(ServiceSettings(engine=settings, api=api), engine).test_client()
            tested = relevances(client, queries, args.depth)
            pairs = [(r, qrels[q].get(d, 0) > 0) for q, hits in tested.items() for d, r in hits]
            ece = expected_calibration_error([r for r, _ in pairs], [y for _, y in pairs])

            kept, removed = halves(qrels, args.seed)
            gone = sorted({d for q in removed for d, g in qrels[q].items() if g > 0})
            engine.delete(gone, collection="eval")
            rates = {}
            for name, qids in (("answer_present", kept), ("answer_removed", removed)):
                abstained = 0
                for qid in qids:
                    body = {
                        "query": queries[qid],
                        "collection": "eval",
                        "top_k": args.context_top_k,
                        "min_relevance": floor,
                    }
                    response = client.post("/v1/context", json=body)
                    if response.status_code != 200:
                        raise SystemExit(f"error: context answered {response.status_code}")
                    abstained += bool(response.json["abstained"])
                rates[name] = {
                    "queries": len(qids),
                    "abstained": abstained,
                    "rate": round(abstained / max(1, len(qids)), 4),
                }
    report = {
        "dataset": test.name,
        "model": model.name,
        "fingerprint": model.fingerprint,
        "ece_10_bins": round(ece, 4),
        "pairs": len(pairs),
        "min_relevance": round(floor, 4),
        "threshold_from": f"{len(validated)} {'held-out' if held is not None else args.val_split} "
        f"queries: the value that {rule}",
        "validation_separation": None if separation is None else round(separation, 4),
        "removed_documents": len(gone),
        "abstain": rates,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"{test.name}: ECE {report['ece_10_bins']:.4f} over {len(pairs)} reranked hits")
    print(f"min_relevance {report['min_relevance']:.4f} ({report['threshold_from']})")
    for name, row in rates.items():
        print(f"{name:>15}: {row['abstained']}/{row['queries']} abstained ({row['rate']:.1%})")


if __name__ == "__main__":
    main()
