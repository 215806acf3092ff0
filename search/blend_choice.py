"""Choosing a blend weight that does not make a collection worse than its retrieval order.

``search.evaluate.tune_blend`` picks the grid weight with the best mean nDCG@10
on judged queries. On a few dozen queries that maximum is noisy: on SciFact a
weight that gained 0.023 on the 81 queries a fine-tune held out lost 0.054 on
the 300 test queries (``docs/benchmarks.md``). ``choose_blend`` adopts the best
weight only when it beats the retrieval order on more queries than it loses,
by a one-sided sign test at ``SIGNIFICANCE`` (ties left out); otherwise it keeps
the grid's largest weight, which gives the retrieval order back. ``sieve
finetune`` (into the model card) and ``sieve calibrate`` (with the collection)
both choose this way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from search.evaluate import Qrels, RerankedQuery, tune_blend, versus
from search.rerank.blend import GRID

SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class BlendChoice:
    """The weight chosen, the grid's scores, and the evidence for or against the best one."""

    weight: float
    grid: dict[str, float]  # mean nDCG@10 of each weight tried
    best: float  # the weight with the best mean nDCG@10
    wins: int  # queries the best weight improves over the retrieval order
    losses: int
    p_value: float  # one-sided sign test of wins against losses
    queries: int

    @property
    def adopted(self) -> bool:
        """Whether the best weight was taken (else the retrieval order was kept)."""
        return self.weight == self.best

    def entry(self) -> dict[str, Any]:
        """What a model card or a collection records about the choice."""
        return {
            "weight": self.weight,
            "best": self.best,
            "adopted": self.adopted,
            "wins": self.wins,
            "losses": self.losses,
            "p_value": round(self.p_value, 4),
            "queries": self.queries,
            "ndcg@10": self.grid,
        }

    def why(self) -> str:
        """One clause for a terminal: what was chosen and on what evidence."""
        return explain(self.entry())


def explain(entry: Mapping[str, Any]) -> str:
    """The clause ``BlendChoice.why`` gives, from a stored entry (a card's or a collection's)."""
    evidence = f"{entry['wins']} wins, {entry['losses']} losses, p={entry['p_value']:.3g}"
    if entry["adopted"]:
        return f"weight {entry['weight']:g} beats the retrieval order ({evidence})"
    return (
        f"weight {entry['weight']:g}, the retrieval order: the best weight {entry['best']:g} "
        f"did not beat it significantly ({evidence})"
    )


def sign_test(wins: int, losses: int) -> float:
    """P(at least ``wins`` of ``wins + losses`` fair coin flips), the one-sided sign test."""
    n = wins + losses
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n


def retrieval_order(query: RerankedQuery) -> list[str]:
    """The query's documents as retrieval ranked them, before any reranking."""
    head = sorted(range(len(query.head)), key=lambda i: (query.ranks[i], i))
    return [query.head[i] for i in head] + list(query.tail)


def choose_blend(
    qrels: Qrels, reranked: dict[str, RerankedQuery], grid: Sequence[float] = GRID
) -> BlendChoice:
    """The best grid weight if it significantly beats the retrieval order, else the largest."""
    best, scores = tune_blend(qrels, reranked, grid)
    baseline = {qid: retrieval_order(q) for qid, q in reranked.items()}
    counts = versus(qrels, baseline, {qid: q.ranking(best) for qid, q in reranked.items()})
    p_value = sign_test(counts["wins"], counts["losses"])
    adopted = p_value < SIGNIFICANCE and counts["wins"] > counts["losses"]
    return BlendChoice(
        weight=best.weight if adopted else max(grid),
        grid=scores,
        best=best.weight,
        wins=counts["wins"],
        losses=counts["losses"],
        p_value=p_value,
        queries=len(reranked),
    )
