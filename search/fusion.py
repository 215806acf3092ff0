"""Rank fusion as pure functions over ranked ``(id, score)`` lists.

Every function takes one list per leg, each ordered best first, and returns a
single list of ``(id, fused_score)`` ordered best first. Ties break by id so
the output is deterministic. Truncating to top-k is the caller's business:
fusion constants are not cut-offs.

References:
- RRF: Cormack, Clarke and Buettcher, "Reciprocal Rank Fusion outperforms
  Condorcet and individual Rank Learning Methods", SIGIR 2009. k = 60, ranks
  counted from 1.
- Min-max and z-score (CombSUM over normalised scores): Fox and Shaw, TREC-2
  1994; Lee, SIGIR 1997.
- DBSF (distribution-based score fusion): each leg normalised to
  [mean - 3 sd, mean + 3 sd], then summed; as used by Qdrant's hybrid queries.
- Bounded (theoretical min-max): each leg divided by its top score, its lower
  bound fixed at the scale's own floor (0 for BM25 and for cosine similarity)
  rather than the lowest score retrieved. Bruch, Gai and Ingber, "An Analysis
  of Fusion Functions for Hybrid Retrieval", ACM TOIS 2023, found a convex
  combination over this normalisation ahead of min-max and RRF in and out of
  domain. Its practical virtue here: a leg's scale does not depend on how many
  candidates it happened to return (a BM25 leg that matched five documents in a
  small collection no longer maps its fifth to 0, as min-max does).
- Adaptive: the bounded fusion with its bm25 share chosen per query from the
  legs' own scores (``search.fusion_adaptive``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from search import fusion_adaptive
from search.errors import InvalidRequest

Ranking = Sequence[tuple[str, float]]
Fused = list[tuple[str, float]]

RRF_K = 60
CHOICE_DEPTH = 100  # documents a ``FusionChoice`` keeps (Recall@100 needs 100)
Legs = tuple[Ranking, Ranking]  # (bm25, vector), best first


def _sorted(scores: dict[str, float]) -> Fused:
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def _weights(runs: Sequence[Ranking], weights: Sequence[float] | None) -> Sequence[float]:
    if weights is None:
        return [1.0] * len(runs)
    if len(weights) != len(runs):
        raise InvalidRequest(
            f"got {len(weights)} fusion weights for {len(runs)} result lists",
            weights=list(weights),
        )
    if any(w < 0 or not math.isfinite(w) for w in weights):
        raise InvalidRequest(
            "fusion weights must be finite and non-negative", weights=list(weights)
        )
    return weights


def rrf(runs: Sequence[Ranking], k: int = RRF_K) -> Fused:
    """Reciprocal rank fusion: score(d) = sum over legs of 1 / (k + rank(d)), rank from 1."""
    return weighted_rrf(runs, None, k=k)


def weighted_rrf(runs: Sequence[Ranking], weights: Sequence[float] | None, k: int = RRF_K) -> Fused:
    """RRF with one weight per leg: score(d) = sum of w_i / (k + rank_i(d))."""
    if k < 1:
        raise InvalidRequest("RRF k must be at least 1", k=k)
    ws = _weights(runs, weights)
    scores: dict[str, float] = {}
    for weight, run in zip(ws, runs, strict=True):
        for rank, (doc_id, _score) in enumerate(run, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + weight / (k + rank)
    return _sorted(scores)


def _normalised_sum(
    runs: Sequence[Ranking],
    weights: Sequence[float] | None,
    normalise: Callable[[list[float]], list[float]],
) -> Fused:
    ws = _weights(runs, weights)
    scores: dict[str, float] = {}
    for weight, run in zip(ws, runs, strict=True):
        if not run:
            continue
        normalised = normalise([score for _id, score in run])
        for (doc_id, _score), value in zip(run, normalised, strict=True):
            # A document missing from a leg contributes 0 from that leg: the
            # bottom of that leg's normalised scale.
            scores[doc_id] = scores.get(doc_id, 0.0) + weight * value
    return _sorted(scores)


def _minmax(values: list[float]) -> list[float]:
    low, high = min(values), max(values)
    if high == low:
        return [1.0] * len(values)
    return [(v - low) / (high - low) for v in values]


def standard_scores(values: Sequence[float]) -> list[float]:
    """Each value in standard deviations from the mean (population sd); all 0 when sd is 0."""
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    if sd == 0:
        return [0.0] * len(values)
    return [(v - mean) / sd for v in values]


def _dbsf(values: list[float]) -> list[float]:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    low, high = mean - 3 * sd, mean + 3 * sd
    if high == low:
        return [0.5] * len(values)
    return [min(1.0, max(0.0, (v - low) / (high - low))) for v in values]


def _bounded(values: list[float]) -> list[float]:
    # Negative cosines (and a negative top score) are below the floor: 0.
    high = max(values)
    if high <= 0:
        return [0.0] * len(values)
    return [max(0.0, v) / high for v in values]


def bounded(runs: Sequence[Ranking], weights: Sequence[float] | None = None) -> Fused:
    """Weighted sum of scores divided by each leg's top score, with 0 as the floor."""
    return _normalised_sum(runs, weights, _bounded)


def minmax(runs: Sequence[Ranking], weights: Sequence[float] | None = None) -> Fused:
    """Weighted sum of min-max normalised scores (each leg scaled to [0, 1])."""
    return _normalised_sum(runs, weights, _minmax)


def zscore(runs: Sequence[Ranking], weights: Sequence[float] | None = None) -> Fused:
    """Weighted sum of z-scores (each leg centred on its mean, in standard deviations).

    A document absent from a leg gets 0 from it, i.e. that leg's mean: absence
    is weak evidence, not the worst possible score.
    """
    return _normalised_sum(runs, weights, standard_scores)


def dbsf(runs: Sequence[Ranking], weights: Sequence[float] | None = None) -> Fused:
    """Distribution-based score fusion: each leg clipped to mean +/- 3 sd, scaled to [0, 1]."""
    return _normalised_sum(runs, weights, _dbsf)


def adaptive(runs: Sequence[Ranking]) -> Fused:
    """Bounded fusion of (bm25, vector) at the weights the shipped adaptive model picks."""
    if len(runs) != 2:
        raise InvalidRequest(
            f"adaptive fusion fuses two result lists (bm25, vector), got {len(runs)}"
        )
    fixed, _signals = FusionChoice("adaptive").resolved((runs[0], runs[1]))
    return bounded(runs, fixed.weights)


FusionMethod = Literal["rrf", "weighted_rrf", "minmax", "zscore", "dbsf", "bounded", "adaptive"]
METHODS: tuple[str, ...] = get_args(FusionMethod)
# The methods that read per-leg weights (plain RRF counts every leg once; adaptive
# fusion picks its own per query).
WEIGHTED_METHODS = frozenset({"weighted_rrf", "minmax", "zscore", "dbsf", "bounded"})


def fuse(
    method: str,
    runs: Sequence[Ranking],
    weights: Sequence[float] | None = None,
    k: int = RRF_K,
) -> Fused:
    """Dispatch by name; an unknown method is an ``InvalidRequest`` naming the valid ones."""
    if method == "rrf":
        return rrf(runs, k=k)
    if method == "weighted_rrf":
        return weighted_rrf(runs, weights, k=k)
    if method == "minmax":
        return minmax(runs, weights)
    if method == "zscore":
        return zscore(runs, weights)
    if method == "dbsf":
        return dbsf(runs, weights)
    if method == "bounded":
        return bounded(runs, weights)
    if method == "adaptive":
        return adaptive(runs)
    raise InvalidRequest(
        f"unknown fusion method {method!r}; choose one of {', '.join(METHODS)}", method=method
    )


@dataclass(frozen=True)
class FusionChoice:
    """One way to fuse the two legs: a method, its (bm25, vector) weights and RRF k."""

    method: str
    weights: tuple[float, float] = (1.0, 1.0)
    k: int = RRF_K

    def resolved(self, legs: Legs) -> tuple[FusionChoice, dict[str, float] | None]:
        """The fixed fusion this choice applies to one query's ``legs``, and, for
        adaptive fusion, the signals its weights came from (None otherwise)."""
        if self.method != "adaptive":
            return self, None
        weights, values = fusion_adaptive.shipped().weights(legs[0], legs[1])
        return FusionChoice("bounded", weights, self.k), values

    def apply(self, legs: Legs) -> list[str]:
        """The fused document ids, best first, cut at ``CHOICE_DEPTH``."""
        fused = fuse(self.method, list(legs), self.weights, k=self.k)
        return [doc_id for doc_id, _ in fused[:CHOICE_DEPTH]]

    def entry(self) -> dict[str, Any]:
        return {"method": self.method, "weights": list(self.weights), "k": self.k}

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> FusionChoice:
        """The choice an ``entry`` (a stored collection setting) describes."""
        weights = entry.get("weights") or (1.0, 1.0)
        return cls(str(entry["method"]), (float(weights[0]), float(weights[1])), int(entry["k"]))

    def label(self) -> str:
        if self.method == "rrf":
            return f"rrf k={self.k}"
        if self.method == "adaptive":
            return "adaptive (per query)"
        shown = f"{self.method} ({self.weights[0]:g}, {self.weights[1]:g})"
        return f"{shown} k={self.k}" if self.method == "weighted_rrf" else shown
