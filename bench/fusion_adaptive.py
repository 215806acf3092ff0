"""Query-adaptive fusion (``search.fusion_adaptive``): learn its coefficients, report per set.

Reads the leg runs ``bench/fusion_runs.py`` wrote. For every judged query, the
nDCG@10 of the bounded fusion at each bm25 share from 0 to 1 (by 0.05) is
computed once (pytrec_eval, ``search.evaluate.per_query``); a model's score on
a set is then the mean over its queries of that curve at the share the model
gives the query (interpolated between grid points). Learning is a coordinate
search over each signal's coefficient (standardised signals, base share fixed
at the configured default's, so the all-zero model is the default), maximising
the mean over the learning sets of their mean nDCG@10; a coefficient moves
only when it gains at least ``--min-gain``.

Two reports:

1. learned on ``--learn`` (default: every set; the model ``--write`` ships):
   every set's default, adaptive, bar (max of best leg and plain RRF) and the
   per-query oracle share;
2. each set held out in turn, learned on every other set (splits of the same
   set held out together): adaptive against the default on the held-out set,
   the estimate of how the procedure does on a set it has not seen.

``--signals`` picks the signals the model may use. The default is
``vector_gap`` alone: with all four, the coefficient of ``bm25_gap`` changes
sign from one held-out fold to the next and the model loses on held-out
SciFact; ``vector_gap``'s is the same in every fold (docs/benchmarks.md).

Run: ``.venv/bin/python bench/fusion_adaptive.py [--runs data/fusion-runs] [--signals S,...]
[--learn SET/SPLIT,...] [--write] [--json]``
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fusion import load  # noqa: E402  (bench/fusion.py)

from search.config import Settings  # noqa: E402
from search.evaluate import metrics, per_query  # noqa: E402
from search.fusion import FusionChoice  # noqa: E402
from search.fusion_adaptive import MODEL_FILE, SIGNALS, AdaptiveModel, Term, signals  # noqa: E402

GRID = [round(0.05 * i, 2) for i in range(21)]
COEFS = [round(0.025 * i, 3) for i in range(-20, 21)]


class Set:
    """One (set, split): its queries' signals and nDCG@10 curves over the share grid."""

    def __init__(self, name: str, qrels: dict, legs: dict, vector: dict) -> None:
        self.name, self.qrels, self.legs = name, qrels, legs
        self.qids = sorted(q for q in legs if q in qrels)
        self.signals = {q: signals(*legs[q]) for q in self.qids}
        table = []
        for share in GRID:
            choice = FusionChoice("bounded", (share, round(1 - share, 2)))
            scores = per_query(qrels, {q: choice.apply(legs[q]) for q in self.qids})
            table.append(scores)
        self.curves = {q: [table[i][q]["ndcg@10"] for i in range(len(GRID))] for q in self.qids}
        self.bar = max(
            metrics(qrels, {q: [d for d, _ in legs[q][0]] for q in self.qids})["ndcg@10"],
            metrics(qrels, {q: [d for d, _ in vector[q]] for q in self.qids})["ndcg@10"],
            metrics(qrels, {q: FusionChoice("rrf").apply(legs[q]) for q in self.qids})["ndcg@10"],
        )
        self.oracle = sum(max(c) for c in self.curves.values()) / len(self.qids)

    def score(self, model: AdaptiveModel) -> float:
        """Mean nDCG@10 with each query fused at the model's share (interpolated)."""
        total = 0.0
        for q in self.qids:
            x = model.share(self.signals[q]) / 0.05
            i = min(int(x), len(GRID) - 2)
            frac = x - i
            curve = self.curves[q]
            total += curve[i] * (1 - frac) + curve[i + 1] * frac
        return total / len(self.qids)

    def exact(self, model: AdaptiveModel) -> dict[str, float]:
        """Per query nDCG@10, fused at the model's exact share (what the pipeline does)."""
        run = {}
        for q in self.qids:
            weights, _ = model.weights(*self.legs[q])
            run[q] = FusionChoice("bounded", weights).apply(self.legs[q])
        return {q: row["ndcg@10"] for q, row in per_query(self.qrels, run).items()}


def mean(scores: dict[str, float]) -> float:
    return sum(scores.values()) / len(scores)


def versus(model: dict[str, float], default: dict[str, float]) -> str:
    """Queries the model wins and loses against the default (nDCG@10 moved by > 1e-9)."""
    wins = sum(model[q] > default[q] + 1e-9 for q in model)
    losses = sum(model[q] < default[q] - 1e-9 for q in model)
    return f"{wins} / {losses}"


def learn(
    sets: list[Set], base: float, min_gain: float, names: list[str], used: Sequence[str] = SIGNALS
) -> AdaptiveModel:
    """Coordinate search over the coefficients of the standardised signals ``used``."""
    values = {s: [x[s] for st in sets for x in st.signals.values()] for s in used}
    moments = {}
    for s, xs in values.items():
        mean = sum(xs) / len(xs)
        sd = (sum((x - mean) ** 2 for x in xs) / len(xs)) ** 0.5
        moments[s] = (round(mean, 4), round(sd, 4))
    coefs = dict.fromkeys(used, 0.0)

    def model_of(c: dict[str, float]) -> AdaptiveModel:
        terms = {s: Term(c[s], *moments[s]) for s in used if c[s]}
        return AdaptiveModel(base, terms, learned_on=tuple(names))

    def objective(c: dict[str, float]) -> float:
        return sum(st.score(model_of(c)) for st in sets) / len(sets)

    best = objective(coefs)
    for _round in range(4):
        moved = False
        for s in used:
            trial = {c: objective({**coefs, s: c}) for c in COEFS}
            pick = max(trial, key=lambda c: (round(trial[c], 6), -abs(c)))
            if trial[pick] >= best + min_gain and pick != coefs[s]:
                coefs[s], best, moved = pick, trial[pick], True
        if not moved:
            break
    return model_of(coefs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="data/fusion-runs")
    parser.add_argument(
        "--learn", default="", help="Comma-separated set/split names; default: every set"
    )
    parser.add_argument("--min-gain", type=float, default=0.0005)
    parser.add_argument(
        "--signals", default="vector_gap", help=f"Comma-separated, of: {', '.join(SIGNALS)}"
    )
    parser.add_argument("--write", action="store_true", help=f"Write search/{MODEL_FILE}.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sets = [Set(*load(p)) for p in sorted(Path(args.runs).glob("*.json"))]
    if not sets:
        raise SystemExit(f"no runs under {args.runs}: run bench/fusion_runs.py first")
    settings = Settings()
    base = settings.fusion_weights[0] if settings.fusion == "bounded" else 0.3
    default = AdaptiveModel(base)
    names = args.learn.split(",") if args.learn else []
    learning = [s for s in sets if s.name in names or not names]
    if not learning:
        raise SystemExit("no set to learn on: pass --learn")
    used = [s for s in args.signals.split(",") if s]
    unknown = set(used) - set(SIGNALS)
    if unknown:
        raise SystemExit(f"unknown signals {sorted(unknown)}; choose from {', '.join(SIGNALS)}")
    shipped = learn(learning, base, args.min_gain, [s.name for s in learning], used)
    print(f"## Learned on {', '.join(shipped.learned_on)}")
    print(json.dumps(shipped.entry()["terms"]))
    print("| set | bar | default | adaptive | wins / losses | per-query oracle |")
    print("|---|---|---|---|---|---|")
    report: dict = {"model": shipped.entry(), "sets": {}, "held_out": {}}
    for st in sets:
        d, a = st.exact(default), st.exact(shipped)
        row = {
            "bar": round(st.bar, 4),
            "default": round(mean(d), 4),
            "adaptive": round(mean(a), 4),
            "wins_losses": versus(a, d),
            "oracle": round(st.oracle, 4),
        }
        report["sets"][st.name] = row
        tag = " (learned on)" if st in learning else ""
        print(
            f"| {st.name}{tag} | {row['bar']:.4f} | {row['default']:.4f} | "
            f"{row['adaptive']:.4f} | {row['wins_losses']} | {row['oracle']:.4f} |"
        )
    print("\n## Each set held out, learned on the others")
    print("| held out | default | adaptive | change | wins / losses | coefficients |")
    print("|---|---|---|---|---|---|")
    for st in sets:
        family = st.name.split("/")[0]
        others = [o for o in sets if o.name.split("/")[0] != family]
        if not others:
            continue
        model = learn(others, base, args.min_gain, [o.name for o in others], used)
        per_d, per_a = st.exact(default), st.exact(model)
        d, a = mean(per_d), mean(per_a)
        coefs = ", ".join(f"{n} {t.coef:+.3f}" for n, t in model.terms.items()) or "none"
        wl = versus(per_a, per_d)
        report["held_out"][st.name] = {
            "default": round(d, 4),
            "adaptive": round(a, 4),
            "wins_losses": wl,
            "coefs": coefs,
        }
        print(f"| {st.name} | {d:.4f} | {a:.4f} | {a - d:+.4f} | {wl} | {coefs} |")
    if args.write:
        path = ROOT / "search" / MODEL_FILE
        path.write_text(json.dumps(shipped.entry(), indent=2) + "\n")
        print(f"\nwrote {path}")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
