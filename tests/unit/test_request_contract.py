"""The request contract: one set of limits for the engine, the HTTP schemas and the plan."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from api.schemas import DocumentFields, SearchBody
from search import request as contract
from search.errors import InvalidRequest
from search.fusion import METHODS
from search.types import CONTENT_TYPES, MODES, SearchRequest

pytestmark = pytest.mark.unit


def _schema(model: Any, name: str) -> dict[str, Any]:
    schema = model.model_json_schema()
    prop = schema["properties"][name]
    if "anyOf" in prop:  # optional fields: the non-null branch
        prop = next(p for p in prop["anyOf"] if p.get("type") != "null")
    return dict(prop)


def test_the_http_schema_states_the_engine_limits():
    assert _schema(SearchBody, "query")["maxLength"] == contract.MAX_QUERY_CHARS
    assert _schema(SearchBody, "top_k")["maximum"] == contract.MAX_TOP_K
    assert _schema(SearchBody, "rerank_depth")["maximum"] == contract.MAX_RERANK_DEPTH
    assert _schema(SearchBody, "filters")["maxProperties"] == contract.MAX_FILTERS
    assert _schema(SearchBody, "min_relevance")["maximum"] == contract.MAX_RELEVANCE
    weights = _schema(SearchBody, "weights")
    assert {item["maximum"] for item in weights["prefixItems"]} == {contract.MAX_WEIGHT}
    assert tuple(_schema(SearchBody, "mode")["enum"]) == MODES
    assert tuple(_schema(SearchBody, "fusion")["enum"]) == METHODS
    assert tuple(_schema(DocumentFields, "content_type")["enum"]) == CONTENT_TYPES


BOUNDARIES: list[tuple[str, Any, Any]] = [
    # field, the last accepted value, the first refused one
    ("query", "x" * contract.MAX_QUERY_CHARS, "x" * (contract.MAX_QUERY_CHARS + 1)),
    ("top_k", contract.MAX_TOP_K, contract.MAX_TOP_K + 1),
    ("top_k", 1, 0),
    ("rerank_depth", contract.MAX_RERANK_DEPTH, contract.MAX_RERANK_DEPTH + 1),
    ("rerank_depth", 1, 0),
    (
        "filters",
        {f"k{i}": "v" for i in range(contract.MAX_FILTERS)},
        {f"k{i}": "v" for i in range(contract.MAX_FILTERS + 1)},
    ),
    ("weights", (contract.MAX_WEIGHT, 0.0), (contract.MAX_WEIGHT + 1, 0.0)),
    ("min_relevance", contract.MAX_RELEVANCE, contract.MAX_RELEVANCE + 0.01),
    ("min_relevance", 0.0, -0.01),
    ("mode", MODES[-1], "fuzzy"),
    ("fusion", METHODS[-1], "borda"),
]


@pytest.mark.parametrize(("name", "good", "bad"), BOUNDARIES)
def test_the_api_and_the_engine_accept_and_refuse_the_same_values(name, good, bad):
    base = {"query": "q"}
    SearchBody.model_validate({**base, name: good})
    contract.validate(SearchRequest(**{**base, name: good}))
    with pytest.raises(ValidationError):
        SearchBody.model_validate({**base, name: bad})
    with pytest.raises(InvalidRequest):
        contract.validate(SearchRequest(**{**base, name: bad}))


DEFAULTS = {"candidates": 100, "rerank_depth": 50, "fusion": "minmax"}


def plan(request: SearchRequest, has_reranker: bool = True):
    contract.validate(request)
    return contract.plan(request, has_reranker=has_reranker, **DEFAULTS)


def test_reranking_windows_are_the_reranked_head():
    p = plan(SearchRequest(query="q", top_k=10))
    assert (p.rerank, p.rerank_depth, p.window, p.depth) == (True, 50, 50, 100)
    assert p.fusion == "minmax" and p.mode == "hybrid"
    # A page past the depth is refused, naming the window.
    with pytest.raises(InvalidRequest, match="window of 50"):
        plan(SearchRequest(query="q", top_k=20, offset=40))
    # One page may ask for more than the depth: the rest keep their fused order.
    p = plan(SearchRequest(query="q", top_k=100, rerank_depth=30))
    assert (p.rerank_depth, p.window) == (30, 100)


def test_without_reranking_the_window_is_the_candidate_depth_or_the_page_end():
    p = plan(SearchRequest(query="q", top_k=10), has_reranker=False)
    assert (p.rerank, p.rerank_depth, p.window, p.depth) == (False, 0, 100, 100)
    p = plan(SearchRequest(query="q", top_k=100, offset=300, rerank=False))
    assert (p.window, p.depth) == (400, 400)
    with pytest.raises(InvalidRequest, match="at most 1000"):
        plan(SearchRequest(query="q", top_k=100, offset=1000, rerank=False))
    # rerank=True without a reranker still plans the reranked window (the
    # pipeline then reports the reranker in ``degraded``).
    assert plan(SearchRequest(query="q", rerank=True), has_reranker=False).rerank


def test_a_pinned_window_is_kept_and_bounds_the_page():
    p = plan(SearchRequest(query="q", top_k=10, offset=30, window=40, rerank_depth=40))
    assert (p.window, p.rerank_depth, p.depth) == (40, 40, 100)
    with pytest.raises(InvalidRequest, match="window of 40"):
        plan(SearchRequest(query="q", top_k=10, offset=40, window=40))
    with pytest.raises(InvalidRequest, match="window must be"):
        plan(SearchRequest(query="q", window=contract.MAX_WINDOW + 1))


@pytest.mark.parametrize("value", [True, 1.0, "1", None])
def test_integer_fields_refuse_other_types(value):
    with pytest.raises(InvalidRequest, match="top_k"):
        contract.validate(SearchRequest(query="q", top_k=value))  # type: ignore[arg-type]


def _option(command, name: str):
    return next(p for p in command.params if p.name == name)


def test_the_command_line_offers_the_engine_limits_and_choices():
    from api.cli.rerank import compare_cmd
    from api.cli.search import eval_cmd, search_cmd

    assert tuple(_option(search_cmd, "mode").type.choices) == MODES
    assert tuple(_option(search_cmd, "fusion").type.choices) == METHODS
    assert tuple(_option(eval_cmd, "fusion").type.choices) == METHODS
    assert _option(search_cmd, "top_k").type.max == contract.MAX_TOP_K
    assert _option(search_cmd, "rerank_depth").type.max == contract.MAX_RERANK_DEPTH
    assert _option(compare_cmd, "depth").type.max == contract.MAX_RERANK_DEPTH
