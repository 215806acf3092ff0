"""How deep to rerank one query: not at all where retrieval is already sure of its answer.

A cross-encoder pass over a top 50 is most of a reranked query's cost (about a
second on two CPU cores), and on a query whose answer both retrieval legs
already agree on it rarely changes the top ten. Retrieval counts as sure when

- both legs rank the same document first (it is the fused top hit, at rank 1
  in BM25 and in the vector leg), and
- that hit's fused score stands clear of the next one's: the relative gap
  ``(s1 - s2) / s1`` is at least ``gap``.

A sure query keeps its fused order (``rerank_window`` 0 in the response); every
other query gets the full window. The signal reads only what fusion already
computed, so deciding costs nothing; ``bench/rerank_depth.py`` measures the share
of rerank work saved against the nDCG@10 lost over a range of gaps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from search.types import Hit


def relative_gap(hits: Sequence[Hit]) -> float | None:
    """``(s1 - s2) / s1`` of the fused top two, or None when it means nothing.

    None: fewer than two fused hits, or a top score that is not positive.
    """
    if len(hits) < 2 or hits[0].fused is None or hits[1].fused is None:
        return None
    first, second = hits[0].fused.score, hits[1].fused.score
    if not (math.isfinite(first) and first > 0):
        return None
    return (first - second) / first


def legs_agree(hits: Sequence[Hit]) -> bool:
    """Whether the fused top hit is also first in both legs."""
    if not hits:
        return False
    top = hits[0]
    return top.bm25 is not None and top.vector is not None and top.bm25.rank == top.vector.rank == 1


@dataclass(frozen=True)
class DepthPolicy:
    """Rerank depth per query: 0 when retrieval is sure (see the module doc), else the window.

    ``gap`` None turns the policy off: every query reranks its whole window.
    ``Settings`` checks the configured gap (``SIEVE_RERANK_SKIP_GAP``).
    """

    gap: float | None = None

    def sure(self, hits: Sequence[Hit]) -> bool:
        """Whether ``hits`` (fused order) are sure enough to need no reranking."""
        if self.gap is None or not legs_agree(hits):
            return False
        gap = relative_gap(hits)
        return gap is not None and gap >= self.gap

    def depth(self, hits: Sequence[Hit], window: int) -> int:
        """How many of the fused ``hits`` to rerank: 0 or ``window``."""
        return 0 if self.sure(hits) else window
