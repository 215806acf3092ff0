"""Query-adaptive fusion: the bounded fusion's bm25 share chosen per query from the legs.

No fixed share suits every collection (docs/benchmarks.md, "Fusion across data
sets"): a collection of keyword traps wants the vector leg, SciFact wants more
BM25. Part of that is visible in the query's own candidates, before any
judgement: a leg whose scores fall steeply over its top 10 has found something
specific, and legs that agree on their top 10 need little arbitration. The
signals, all read from the two ranked ``(id, score)`` lists fusion is given:

- ``bm25_gap``: ``(s1 - s10) / s1`` over the BM25 leg's top 10 (0: flat, 1: steep);
- ``vector_gap``: the same for the vector leg's cosines;
- ``vector_top``: the vector leg's best cosine;
- ``overlap``: the share of the two top 10s the legs have in common.

The share is a clipped linear function of the standardised signals::

    share = clip(base + sum_i coef_i * (x_i - mean_i) / sd_i, low, high)

with ``base`` the configured default's share, so an all-zero model is the
default. The coefficients, means and spreads are learned offline by
``bench/fusion_adaptive.py`` on judged queries (which sets: ``learned_on`` in
``fusion_adaptive.json``, shipped in this package) and the fused order is then
the bounded fusion's (``search.fusion.bounded``) at the chosen weights.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

Ranking = Sequence[tuple[str, float]]
TOP = 10  # the head the signals read
SIGNALS = ("bm25_gap", "vector_gap", "vector_top", "overlap")
MODEL_FILE = "fusion_adaptive.json"


def _gap(run: Ranking) -> float:
    """How far the leg's score falls over its head, as a share of its top score."""
    if not run or run[0][1] <= 0:
        return 0.0
    head = run[: min(TOP, len(run))]
    return max(0.0, min(1.0, (head[0][1] - head[-1][1]) / head[0][1]))


def signals(bm25: Ranking, vector: Ranking) -> dict[str, float]:
    """The query-time signals of one query's two legs (best first, raw scores)."""
    top_bm25 = {doc for doc, _ in bm25[:TOP]}
    top_vector = {doc for doc, _ in vector[:TOP]}
    shared = len(top_bm25 & top_vector) / TOP if top_bm25 and top_vector else 0.0
    return {
        "bm25_gap": _gap(bm25),
        "vector_gap": _gap(vector),
        "vector_top": float(vector[0][1]) if vector else 0.0,
        "overlap": shared,
    }


@dataclass(frozen=True)
class Term:
    """One signal's part in the share: its coefficient over its standardised value."""

    coef: float
    mean: float
    sd: float

    def of(self, value: float) -> float:
        return 0.0 if self.sd <= 0 else self.coef * (value - self.mean) / self.sd


@dataclass(frozen=True)
class AdaptiveModel:
    """A clipped linear map from a query's signals to the bounded fusion's bm25 share."""

    base: float
    terms: Mapping[str, Term] = field(default_factory=dict)
    low: float = 0.05
    high: float = 0.95
    learned_on: tuple[str, ...] = ()

    def share(self, values: Mapping[str, float]) -> float:
        """The bm25 share for a query with these signals."""
        raw = self.base + sum(t.of(values.get(name, 0.0)) for name, t in self.terms.items())
        if not math.isfinite(raw):
            return self.base
        return round(min(self.high, max(self.low, raw)), 4)

    def weights(self, bm25: Ranking, vector: Ranking) -> tuple[tuple[float, float], dict]:
        """The (bm25, vector) weights for one query, and the signals they came from."""
        values = signals(bm25, vector)
        share = self.share(values)
        return (share, round(1.0 - share, 4)), {k: round(v, 4) for k, v in values.items()}

    def explain(self, values: Mapping[str, float]) -> str:
        """One line: the share, and the signals that moved it most from the base."""
        share = self.share(values)
        moves = sorted(
            ((name, t.of(values.get(name, 0.0))) for name, t in self.terms.items()),
            key=lambda item: -abs(item[1]),
        )
        said = ", ".join(
            f"{name} {values.get(name, 0.0):.2f} ({move:+.2f})"
            for name, move in moves
            if abs(move) >= 0.005
        )
        return f"bm25 share {share:.2f} from base {self.base:.2f}" + (f": {said}" if said else "")

    def entry(self) -> dict[str, Any]:
        """The JSON form ``fusion_adaptive.json`` holds."""
        return {
            "base": self.base,
            "low": self.low,
            "high": self.high,
            "learned_on": list(self.learned_on),
            "terms": {
                name: {"coef": t.coef, "mean": t.mean, "sd": t.sd} for name, t in self.terms.items()
            },
        }

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> AdaptiveModel:
        terms = {
            name: Term(float(t["coef"]), float(t["mean"]), float(t["sd"]))
            for name, t in (entry.get("terms") or {}).items()
            if name in SIGNALS
        }
        return cls(
            float(entry["base"]),
            terms,
            float(entry.get("low", 0.05)),
            float(entry.get("high", 0.95)),
            tuple(entry.get("learned_on") or ()),
        )


@lru_cache(maxsize=1)
def shipped() -> AdaptiveModel:
    """The model shipped in this package (``fusion_adaptive.json``)."""
    text = resources.files(__package__).joinpath(MODEL_FILE).read_text(encoding="utf-8")
    return AdaptiveModel.of(json.loads(text))
