"""Search, LLM context and rerank endpoints (role ``search``)."""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify, request

from api.auth import requires, scoped_collection
from api.errors import ApiError
from api.paging import engine_request, next_cursor
from api.rerank_shapes import (
    cohere_answer,
    document_texts,
    is_tei_body,
    server_timing,
    tei_answer,
)
from api.schemas import ContextBody, RerankBody, SearchBody, TeiRerankBody
from api.state import json_body, services
from search.context import pack_context
from search.rerank.calibration import calibration_of
from search.rerank.status import cuda_present, describe
from search.serialize import result_json
from search.types import SearchRequest

bp = Blueprint("search", __name__)


@bp.post("/v1/search")
@requires("search")
def search() -> Response:
    """Hybrid search, one page of one fixed window (see ``api.paging``)."""
    body = json_body(SearchBody)
    svc = services()
    scoped_collection(body.collection, svc.engine.has_collection)
    result = svc.engine.search(engine_request(body, svc.cursors))
    svc.metrics.observe_result(result)
    return jsonify(dict(result_json(result), next_cursor=next_cursor(result, body, svc.cursors)))


@bp.post("/v1/context")
@requires("search")
def context() -> Response:
    """Search, then pack the hits into cited context within a token budget.

    With ``min_relevance``, an answer where no passage reached it abstains.
    """
    body = json_body(ContextBody)
    svc = services()
    scoped_collection(body.collection, svc.engine.has_collection)
    result = svc.engine.search(
        SearchRequest(
            query=body.query,
            top_k=body.top_k,
            filters=body.filters,
            collection=body.collection,
            min_relevance=body.min_relevance,
        )
    )
    svc.metrics.observe_result(result)
    started = time.perf_counter()
    packed = pack_context(
        body.query,
        result.hits,
        body.max_tokens,
        format=body.format,
        min_relevance=body.min_relevance,
    )
    timings = dict(result.timings_ms, pack=(time.perf_counter() - started) * 1000)
    out = packed.to_dict()
    out["reranked"] = result.reranked
    out["degraded"] = list(result.degraded)
    out["degraded_reasons"] = dict(result.degraded_reasons)
    out["timings_ms"] = {k: round(v, 3) for k, v in timings.items()}
    return jsonify(out)


@bp.post("/v1/rerank")
@bp.post("/v2/rerank", endpoint="rerank_v2")
@bp.post("/rerank", endpoint="rerank_root")
@requires("search")
def rerank() -> Response:
    """Score documents against a query with the configured cross-encoder.

    Cohere's and Jina's shape everywhere; at ``/rerank`` also TEI's, told apart
    by its ``texts`` field (``api.rerank_shapes``).
    """
    body: RerankBody | TeiRerankBody
    if request.endpoint == "search.rerank_root" and is_tei_body(request.get_data(cache=True)):
        body = json_body(TeiRerankBody)
    else:
        body = json_body(RerankBody)
    texts = body.texts if isinstance(body, TeiRerankBody) else document_texts(body)
    svc = services()
    reranker = svc.engine.reranker
    if reranker is None:
        # The status module owns the words: why there is none, and the one fix.
        status = describe(svc.engine.settings, None, cuda=cuda_present())
        raise ApiError(
            503, f"no reranker: {status.why}; fix: {status.fix}, then restart", backend="rerank"
        )
    limit = svc.api.max_rerank_docs
    if len(texts) > limit:
        raise ApiError(
            413,
            f"{len(texts)} documents; at most {limit} per request (SIEVE_MAX_RERANK_DOCS)",
            limit=limit,
        )
    started = time.perf_counter()
    if isinstance(body, TeiRerankBody):
        batch = reranker.rerank(body.query, texts)
        response = jsonify(tei_answer(body, batch))
    else:
        # Passed only when asked for, as the Reranker contract allows.
        limit_tokens = body.max_tokens_per_doc
        options = {} if limit_tokens is None else {"max_doc_tokens": limit_tokens}
        batch = reranker.rerank(body.query, texts, **options)
        answer = cohere_answer(body, texts, batch, reranker.model_key, calibration_of(reranker))
        response = jsonify(answer)
    total = {**batch.timings_ms, "total": (time.perf_counter() - started) * 1000}
    response.headers["Server-Timing"] = server_timing(total)
    return response
