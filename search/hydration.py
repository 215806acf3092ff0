"""Passages read late: fused hits built from id-only BM25 candidates get their text
only when a stage needs it (the reranker its head, the caller its page).

Decoding every candidate's stored passage cost more than the BM25 search itself,
and a query returns ten of the hundred it fuses.
"""

from __future__ import annotations

import time
from dataclasses import replace

from search.keyword.base import Hydrate
from search.types import Hit


class Hydration:
    """Reads the passages of fused hits built from id-only BM25 candidates, once each."""

    def __init__(self, lazy: set[str], hydrate: Hydrate | None) -> None:
        self.lazy, self.hydrate, self.ms = lazy, hydrate, 0.0

    def __call__(self, hits: list[Hit], begin: int, end: int) -> list[Hit]:
        """``hits`` with those in ``[begin, end)`` carrying their passages."""
        wanted = [h.chunk_id for h in hits[begin:end] if h.chunk_id in self.lazy]
        if not wanted or self.hydrate is None:
            return hits
        t0 = time.perf_counter()
        full = self.hydrate(wanted)
        out = list(hits)
        for i in range(begin, min(end, len(hits))):
            chunk = full.get(hits[i].chunk_id)
            if chunk is not None and hits[i].chunk_id in self.lazy:
                out[i] = replace(
                    hits[i],
                    title=chunk.title,
                    text=chunk.text,
                    start=chunk.start,
                    end=chunk.end,
                    metadata=chunk.metadata,
                )
        self.lazy.difference_update(full)
        self.ms += (time.perf_counter() - t0) * 1000
        return out
