"""The one JSON view of a search result, shared by the HTTP API and the command line.

Every stage's provenance is kept per hit (BM25, vector, fused, rerank), plus a
highlighted snippet; per result, what the query plan did and where the time went.
"""

from __future__ import annotations

from typing import Any

from search.text.snippet import snippet
from search.types import Hit, LegScore, SearchResult


def _leg(value: LegScore | None) -> dict[str, Any] | None:
    return None if value is None else {"score": value.score, "rank": value.rank}


def hit_json(hit: Hit, query: str, weights: tuple[float, float] | None = None) -> dict[str, Any]:
    """One hit, JSON-ready; ``weights``: the (bm25, vector) weights that fused it."""
    fused = _leg(hit.fused)
    if fused is not None:
        fused["weights"] = None if weights is None else list(weights)
    return {
        "doc_id": hit.doc_id,
        "title": hit.title,
        "text": hit.text,
        "snippet": snippet(hit.text, query),
        "chunk_id": hit.chunk_id,
        "offsets": [hit.start, hit.end],
        "score": hit.score,
        "rank": hit.rank,
        "metadata": dict(hit.metadata),
        "bm25": _leg(hit.bm25),
        "vector": _leg(hit.vector),
        "fused": fused,
        "rerank": None
        if hit.rerank_logit is None
        else {"logit": hit.rerank_logit, "score": hit.rerank_score, "relevance": hit.relevance},
    }


def result_json(result: SearchResult) -> dict[str, Any]:
    """A page of results, JSON-ready: the body of ``POST /v1/search`` but its cursor."""
    return {
        "query": result.query,
        "mode": result.mode,
        "fusion": result.fusion,
        "fusion_weights": None if result.fusion_weights is None else list(result.fusion_weights),
        "fusion_source": result.fusion_source,
        "fusion_signals": None if result.fusion_signals is None else dict(result.fusion_signals),
        "fusion_reason": result.fusion_reason,
        "reranked": result.reranked,
        "rerank_window": result.rerank_window,
        "rerank_blend": result.rerank_blend,
        "rerank_blend_source": result.rerank_blend_source,
        "page": result.offset // result.top_k + 1,
        "top_k": result.top_k,
        "total_window": result.total_window,
        "degraded": list(result.degraded),
        "degraded_reasons": dict(result.degraded_reasons),
        "skipped": dict(result.skipped),
        "cached_scores": result.cached_scores,
        "timings_ms": {k: round(v, 3) for k, v in result.timings_ms.items()},
        "hits": [hit_json(hit, result.query, result.fusion_weights) for hit in result.hits],
    }
