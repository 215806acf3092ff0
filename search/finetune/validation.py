"""Validation for fine-tuning: held-out queries, their hybrid candidates, nDCG@10.

The candidates are each validation query's hybrid top-k, fixed once, so that
every evaluation (the hybrid order itself, the start model, each checkpoint)
orders the same documents; metrics come from ``search.evaluate.metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from search.evaluate import metrics
from search.finetune.data import JudgedQueries
from search.finetune.model import CrossEncoder


class Candidates(Protocol):
    """Judged queries, retrieval and document texts (a ``TrainingSource``)."""

    data: JudgedQueries

    def text_of(self, doc_id: str) -> str | None: ...

    def retrieve(self, query: str, depth: int) -> list[str]: ...


class Validation:
    """The held-out queries and their hybrid candidates, fixed once."""

    def __init__(self, source: Candidates, qids: Sequence[str], depth: int) -> None:
        data = source.data
        self.qrels = {q: dict(data.qrels[q]) for q in qids}
        self.queries = {q: data.queries[q] for q in qids}
        self.candidates: dict[str, list[tuple[str, str]]] = {}
        for qid in qids:
            ids = source.retrieve(data.queries[qid], depth)
            texts = [(d, source.text_of(d)) for d in ids]
            self.candidates[qid] = [(d, t) for d, t in texts if t]

    def __bool__(self) -> bool:
        return bool(self.qrels)

    def hybrid(self) -> dict[str, float]:
        """Metrics of the hybrid order itself: the baseline reranking must beat."""
        return _rounded(
            metrics(self.qrels, {q: [d for d, _ in c] for q, c in self.candidates.items()})
        )

    def reranked(self, model: CrossEncoder) -> dict[str, float]:
        """Metrics after ordering each query's candidates by the model's logits."""
        run: dict[str, list[str]] = {}
        for qid, candidates in self.candidates.items():
            logits = model.score(self.queries[qid], [t for _, t in candidates])
            order = sorted(range(len(candidates)), key=lambda i: (-logits[i], i))
            run[qid] = [candidates[i][0] for i in order]
        return _rounded(metrics(self.qrels, run))


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in values.items()}
