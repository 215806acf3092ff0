"""Blending the cross-encoder's verdict with the retrieval order it reranks.

A cross-encoder that is weak on a domain can bury the documents that hybrid
retrieval already ranked well. The blend keeps retrieval's opinion in the
score: within one query's reranked head,

    blended(d) = z(logit(d)) + weight * z(1 / (k + rank(d)))

where ``z`` is the standard score over the head (so the weight is in units of
standard deviations, whatever the model's logit scale) and ``rank`` is the
1-based retrieval rank, with the RRF prior of Cormack et al. (SIGIR 2009,
k = 60). Weight 0 is the pure rerank order; a large enough weight gives the
retrieval order back, and a weight tuned on held-out judgements
(``sieve eval --tune-blend``) picks the point between them that does best there.
Ties break by retrieval rank, as the pure order's do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from search.errors import InvalidRequest
from search.fusion import RRF_K, standard_scores
from search.types import Hit

# Weights ``sieve eval --tune-blend`` tries: pure rerank, through even mixes,
# to (nearly) the retrieval order.
GRID: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0)


@dataclass(frozen=True)
class Blend:
    """How much of the retrieval prior joins the rerank score (0: none)."""

    weight: float
    k: int = RRF_K

    def __post_init__(self) -> None:
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise InvalidRequest(
                "the blend weight must be a finite number >= 0", weight=self.weight
            )
        if self.k < 1:
            raise InvalidRequest("the blend's k must be at least 1", k=self.k)


# Where a blend weight comes from, strongest first (``resolve_blend``).
SOURCES = ("collection", "setting", "card", "default")


def resolve_blend(
    *, collection: float | None, setting: float | None, card: float | None
) -> tuple[Blend | None, str]:
    """The blend in use (None: the pure rerank order) and which of ``SOURCES`` chose it.

    The collection's weight (``sieve calibrate``, stored with the collection)
    wins for that collection; then ``SIEVE_RERANK_BLEND_WEIGHT`` when set; then
    the weight ``sieve finetune`` chose on validation and wrote in the model's
    card; else none ("default").
    """
    for source, weight in (("collection", collection), ("setting", setting), ("card", card)):
        if weight is not None:
            return (Blend(weight) if weight > 0 else None), source
    return None, "default"


def card_blend_weight(card: Mapping[str, Any]) -> float | None:
    """The blend weight a model card records (``{"blend": {"weight": w, ...}}``), if any."""
    entry = card.get("blend")
    weight = entry.get("weight") if isinstance(entry, Mapping) else None
    if isinstance(weight, int | float) and not isinstance(weight, bool):
        return float(weight)
    return None


def retrieval_rank(hit: Hit) -> int:
    """Where the hit stood before reranking (fused rank, or its only leg's rank)."""
    leg = hit.fused or hit.bm25 or hit.vector
    return leg.rank if leg else hit.rank


def blended_scores(logits: Sequence[float], ranks: Sequence[int], blend: Blend) -> list[float]:
    """Each head passage's blended score (see the module docstring), in input order."""
    _check(logits, ranks)
    if not logits:
        return []
    prior = standard_scores([1.0 / (blend.k + rank) for rank in ranks])
    return [z + blend.weight * p for z, p in zip(standard_scores(logits), prior, strict=True)]


def best_first(
    logits: Sequence[float], ranks: Sequence[int], blend: Blend | None = None
) -> list[int]:
    """Indices of the head by blended score, best first; ties by retrieval rank, then input.

    Without a blend, or with weight 0, the order is by raw logit, exactly as
    an unblended rerank orders.
    """
    _check(logits, ranks)
    if blend is None or blend.weight == 0:
        scores = list(logits)
    else:
        scores = blended_scores(logits, ranks, blend)
    return sorted(range(len(scores)), key=lambda i: (-scores[i], ranks[i], i))


def _check(logits: Sequence[float], ranks: Sequence[int]) -> None:
    if len(logits) != len(ranks):
        raise InvalidRequest(f"got {len(logits)} logits for {len(ranks)} ranks")
