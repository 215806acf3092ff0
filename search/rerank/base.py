"""The ``Reranker`` contract, and the two rules every reranker's scores obey.

The pipeline holds "a reranker" and never knows which: the in-process
``CrossEncoderReranker``, the Celery client in ``workers/``, or either wrapped by
``CachingReranker``. Whatever answers, a score is ``sigmoid(logit)`` of this
module (fresh or cached, so a repeated query returns identical numbers), and a
batch with other than one score per passage is ``check_scores``'s error.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from search.errors import BackendUnavailable
from search.types import RerankBatch


@runtime_checkable
class Reranker(Protocol):
    """Scores (query, passage) pairs with a cross-encoder."""

    @property
    def model_key(self) -> str:
        """Identifies the scores: model id, revision and max_length (the cache keys on it)."""
        ...

    def rerank(
        self,
        query: str,
        passages: Sequence[str],
        *,
        deadline: float | None = None,
        max_doc_tokens: int | None = None,
    ) -> RerankBatch:
        """One score per passage, in the passages' order.

        ``max_doc_tokens`` scores only each passage's first that many tokens
        (at most ``MAX_DOC_TOKENS``, the default; Cohere's ``max_tokens_per_doc``).

        ``deadline`` is a ``time.monotonic()`` instant: past it the caller no
        longer waits, so a reranker neither starts nor goes on with work it
        cannot finish by then. Raises ``search.errors.BackendUnavailable`` when
        the reranker cannot answer (down, late, busy, model missing); the
        pipeline then degrades.
        """
        ...


def innermost(reranker: object) -> object:
    """The reranker under the cache and deadline wrappers (each keeps it as ``inner``)."""
    for _ in range(8):
        if not hasattr(reranker, "inner"):
            break
        reranker = reranker.inner
    return reranker


def card_of(reranker: object) -> dict[str, Any]:
    """The model card of a reranker's model (``sieve-model.json``), or {} if none is known."""
    card = getattr(innermost(reranker), "card", None)
    return card if isinstance(card, dict) else {}


def left_s(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (never negative), or None for no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def stop_at(deadline: float | None, done: str) -> None:
    """Raise ``BackendUnavailable(reason="deadline")`` once ``deadline`` has passed.

    A reranker calls it between steps of its work; ``done`` says how far it got
    ("3 of 10 batches"), for the message.
    """
    if deadline is not None and time.monotonic() >= deadline:
        raise BackendUnavailable(
            f"rerank stopped at its deadline after {done}", backend="rerank", reason="deadline"
        )


def sigmoid(logit: float) -> float:
    """The normalised score of a logit (float64, overflow-free), for fresh and cached alike."""
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    z = math.exp(logit)  # the mirrored form does not overflow for very negative logits
    return z / (1.0 + z)


def check_scores(
    scores: RerankBatch | Sequence[object],
    expected: int,
    backend: str = "rerank",
    *,
    source: str = "reranker",
    **data: Any,
) -> None:
    """Raise ``BackendUnavailable`` unless there is exactly one score per passage.

    ``scores`` is a batch or its list of scores (or of raw score rows);
    ``source`` names who answered in the message ("reranker", "worker"), and
    ``data`` (e.g. ``reason="malformed"``) is carried on the error.
    """
    got = len(scores.scores if isinstance(scores, RerankBatch) else scores)
    if got != expected:
        raise BackendUnavailable(
            f"{source} returned {got} scores for {expected} passages", backend=backend, **data
        )
