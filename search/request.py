"""The search request contract: its limits, its validation, and the query plan.

This module is the one home of every rule about what a search may ask for and
of how deep each stage goes. The HTTP schemas (``api/schemas.py``), the OpenAPI
document and the command line derive their limits and choices from the names
here; ``tests/unit/test_request_contract.py`` checks that they agree.

The plan fixes one ordered *window* per query: the list that pages are slices
of. When reranking, the window is the reranked head (the rerank depth), so
paging walks the cross-encoder's order; a single page may ask for more, and
the hits past the depth keep their fused order. Without reranking it is the
configured candidate depth, or the page's end if deeper. A window can be
pinned by the caller (a pagination cursor does), so that page N + 1 continues
page N exactly.
"""

from __future__ import annotations

import math

from search.errors import InvalidRequest
from search.fusion import METHODS as FUSION_METHODS
from search.types import MODES, QueryPlan, SearchRequest

MAX_QUERY_CHARS = 2048
MAX_TOP_K = 100  # hits per page
MAX_WINDOW = 1000  # deepest result ever served (offset + top_k), and the deepest leg
MAX_RERANK_DEPTH = 500
MAX_FILTERS = 32
MAX_WEIGHT = 100.0
MAX_RELEVANCE = 1.0  # min_relevance is a probability: 0 to 1


def validate(request: SearchRequest) -> None:
    """Reject a malformed request with a message that names the problem."""
    if not isinstance(request.query, str) or not request.query.strip():
        raise InvalidRequest("the query is empty")
    if len(request.query) > MAX_QUERY_CHARS:
        raise InvalidRequest(f"the query is longer than {MAX_QUERY_CHARS} characters")
    if request.mode not in MODES:
        raise InvalidRequest(
            f"unknown mode {request.mode!r}; choose one of {', '.join(MODES)}", mode=request.mode
        )
    _in_range("top_k", request.top_k, 1, MAX_TOP_K)
    # The offset's upper bound is the window's, checked by ``plan`` with a message naming it.
    _in_range("offset", request.offset, 0, MAX_WINDOW * MAX_TOP_K)
    if request.fusion is not None and request.fusion not in FUSION_METHODS:
        raise InvalidRequest(
            f"unknown fusion method {request.fusion!r}; choose one of {', '.join(FUSION_METHODS)}"
        )
    if request.fusion == "adaptive" and request.weights is not None:
        raise InvalidRequest("adaptive fusion picks its own weights per query: leave weights out")
    if request.candidates is not None:
        _in_range("candidates", request.candidates, 1, MAX_WINDOW)
    if request.window is not None:
        _in_range("window", request.window, 1, MAX_WINDOW)
    if request.rerank_depth is not None:
        _in_range("rerank_depth", request.rerank_depth, 1, MAX_RERANK_DEPTH)
    if request.filters is not None and len(request.filters) > MAX_FILTERS:
        raise InvalidRequest(f"at most {MAX_FILTERS} filters")
    if request.weights is not None and (
        len(request.weights) != 2
        or not all(
            isinstance(w, int | float) and math.isfinite(w) and 0 <= w <= MAX_WEIGHT
            for w in request.weights
        )
    ):
        raise InvalidRequest(f"weights must be two numbers (bm25, vector) from 0 to {MAX_WEIGHT:g}")
    if request.min_relevance is not None and (
        isinstance(request.min_relevance, bool)
        or not isinstance(request.min_relevance, int | float)
        or not 0 <= request.min_relevance <= MAX_RELEVANCE
    ):
        raise InvalidRequest(f"min_relevance must be a number from 0 to {MAX_RELEVANCE:g}")
    if request.min_relevance is not None and request.rerank is False:
        raise InvalidRequest("min_relevance needs reranking: leave rerank on")


def plan(
    request: SearchRequest,
    *,
    has_reranker: bool,
    candidates: int,
    rerank_depth: int,
    fusion: str,
) -> QueryPlan:
    """The plan of a valid request; the defaults are the configured ones.

    A page that ends beyond its window is an ``InvalidRequest`` naming the window.
    """
    rerank = has_reranker if request.rerank is None else request.rerank
    depth_asked = request.rerank_depth or rerank_depth
    end = request.offset + request.top_k
    leg_depth = request.candidates or candidates
    if request.window is not None:
        window = request.window
    elif rerank:
        window = max(depth_asked, request.top_k)
    else:
        window = max(leg_depth, end)
    window = min(window, MAX_WINDOW)
    if end > window:
        why = "the rerank depth" if rerank else f"at most {MAX_WINDOW}"
        raise InvalidRequest(
            f"page {request.offset // request.top_k + 1} with top_k {request.top_k} would end "
            f"at result {end}, beyond this query's window of {window} results ({why}); "
            "ask for a smaller page",
            window=window,
        )
    return QueryPlan(
        mode=request.mode,
        fusion=request.fusion or fusion,
        rerank=rerank,
        rerank_depth=min(depth_asked, window) if rerank else 0,
        window=window,
        depth=max(leg_depth, window),
    )


def _in_range(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}")
