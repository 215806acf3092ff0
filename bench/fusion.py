"""Fusion across data sets: the legs, plain RRF, the old and new defaults, per-collection tuning.

Reads the leg runs ``bench/fusion_runs.py`` wrote (one JSON per set and
split) and applies every fusion offline with the pipeline's own functions
(``search.fusion``), scored by pytrec_eval (``search.evaluate.metrics``).

1. How the default was chosen, set by set: for each set held out, the bounded
   fusion's bm25 share (0 to 1 by 0.05) that maximises the *smallest* margin,
   over the other sets, above max(best leg, plain RRF); then that share on the
   held-out set. A share that every held-out fold picks is robust; one that
   only wins where it was tuned is not.
2. The table: nDCG@10 and Recall@100 of bm25, vector, plain RRF, the previous
   default (min-max 1.0/0.8, tuned on SciFact train), the default, and
   per-collection tuning (``search.fusion_tuning.tune``: 5-fold
   cross-validated, so every query is scored by a fusion chosen without it).

Run: ``.venv/bin/python bench/fusion.py [--runs data/fusion-runs] [--json]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.config import Settings  # noqa: E402
from search.evaluate import metrics  # noqa: E402
from search.fusion import FusionChoice  # noqa: E402
from search.fusion_tuning import tune  # noqa: E402

SHARES = [round(0.05 * i, 2) for i in range(21)]
PREVIOUS = FusionChoice("minmax", (1.0, 0.8))


def load(path: Path) -> tuple[str, dict, dict, dict]:
    """A set's qrels, the legs fusion sees, and the vector leg run on its own.

    Where hybrid search skips the vector leg (the embedder does not serve the
    query's script), fusion gets an empty vector leg, as in the pipeline.
    """
    data = json.loads(path.read_text())
    fused = {
        qid: (pair["bm25"], [] if pair.get("skips_vector") else pair["vector"])
        for qid, pair in data["legs"].items()
    }
    vector = {qid: pair["vector"] for qid, pair in data["legs"].items()}
    # Only the queries that ran (a blank query does not), so every row has one denominator.
    qrels = {qid: rels for qid, rels in data["qrels"].items() if qid in fused}
    return f"{data['set']}/{data['split']}", qrels, fused, vector


def row(qrels: dict, legs: dict, rank) -> dict[str, float]:
    got = metrics(qrels, {qid: rank(pair) for qid, pair in legs.items()})
    return {"ndcg@10": round(got["ndcg@10"], 4), "recall@100": round(got["recall@100"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="data/fusion-runs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sets = [load(p) for p in sorted(Path(args.runs).glob("*.json"))]
    if not sets:
        raise SystemExit(f"no runs under {args.runs}: run bench/fusion_runs.py first")
    settings = Settings()
    default = FusionChoice(settings.fusion, settings.fusion_weights, settings.rrf_k)

    table: dict[str, dict[str, dict[str, float]]] = {}
    curves: dict[str, list[float]] = {}
    bars: dict[str, float] = {}
    for name, qrels, legs, vector in sets:
        rows = {
            "bm25": row(qrels, legs, lambda p: [d for d, _ in p[0]]),
            "vector": row(qrels, vector, lambda run: [d for d, _ in run]),
            "rrf": row(qrels, legs, FusionChoice("rrf").apply),
            "previous default": row(qrels, legs, PREVIOUS.apply),
            f"default ({default.label()})": row(qrels, legs, default.apply),
        }
        tuned = tune(qrels, legs, default)
        rows["tuned (5-fold CV)"] = {
            "ndcg@10": round(tuned.cv_ndcg, 4),
            "chosen": tuned.best.label(),
            "adopted": tuned.adopted,
            "wins": tuned.wins,
            "losses": tuned.losses,
        }  # type: ignore[dict-item]
        table[name] = rows
        bars[name] = max(rows[k]["ndcg@10"] for k in ("bm25", "vector", "rrf"))
        curves[name] = [
            row(qrels, legs, FusionChoice("bounded", (s, round(1 - s, 2))).apply)["ndcg@10"]
            for s in SHARES
        ]

    print("## The default's bm25 share, chosen with each set held out")
    print("| held out | share chosen on the others | smallest margin there | held out | bar |")
    print("|---|---|---|---|---|")
    chosen_shares = {}
    for held in curves:
        others = [n for n in curves if n != held and n.split("/")[0] != held.split("/")[0]]
        if not others:
            continue
        margins = [min(curves[n][i] - bars[n] for n in others) for i in range(len(SHARES))]
        # The worst margin first; among equals (a set fusion cannot change, such
        # as Chinese queries the vector leg skips, ties them all) the mean margin.
        means = [
            sum(curves[n][i] - bars[n] for n in others) / len(others) for i in range(len(SHARES))
        ]
        best = max(range(len(SHARES)), key=lambda i: (round(margins[i], 6), means[i]))
        chosen_shares[held] = SHARES[best]
        print(
            f"| {held} | {SHARES[best]:.2f} | {margins[best]:+.4f} | "
            f"{curves[held][best]:.4f} | {bars[held]:.4f} |"
        )
    passing = [
        share for i, share in enumerate(SHARES) if all(curves[n][i] >= bars[n] for n in curves)
    ]
    print(f"\nshares at or above the bar on every set: {passing or 'none'}")
    print()
    print("## Per set (nDCG@10 / Recall@100)")
    print("| set | bm25 | vector | rrf | previous default | default | tuned (CV) |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in table.items():
        cells = [
            f"{r['ndcg@10']:.4f} / {r['recall@100']:.4f}"
            for k, r in rows.items()
            if "recall@100" in r
        ]
        t = rows["tuned (5-fold CV)"]
        note = (
            f"{t['ndcg@10']:.4f} ({t['chosen']}, {'adopted' if t['adopted'] else 'default kept'})"
        )
        print(f"| {name} | " + " | ".join(cells) + f" | {note} |")

    # What the choice costs a query: the fusion call alone, on the set with the most
    # fused candidates per query (the rest of the query path is the same whichever method fuses).
    def per_query(item: tuple) -> float:
        return sum(len(b) + len(v) for b, v in item[2].values()) / len(item[2])

    timing_set = max(sets, key=per_query)
    timed = {"previous default": PREVIOUS, "default": default, "rrf": FusionChoice("rrf")}
    costs = {}
    for label, choice in timed.items():
        started = time.perf_counter()
        for _ in range(5):
            for pair in timing_set[2].values():
                choice.apply(pair)
        costs[label] = (time.perf_counter() - started) * 1e6 / (5 * len(timing_set[2]))
    print(f"\nfusion per query on {timing_set[0]} (microseconds, depth 100 per leg): ", end="")
    print(", ".join(f"{label} {us:.0f}" for label, us in costs.items()))
    if args.json:
        print(
            json.dumps(
                {
                    "default": default.entry(),
                    "sets": table,
                    "bounded_curve": {"shares": SHARES, **curves},
                    "held_out_shares": chosen_shares,
                    "passing_shares": passing,
                    "fusion_us_per_query": costs,
                }
            )
        )


if __name__ == "__main__":
    main()
