"""A blend weight is adopted only when it significantly beats the retrieval order."""

from __future__ import annotations

import pytest

from search.blend_choice import choose_blend, explain, retrieval_order, sign_test
from search.evaluate import RerankedQuery
from search.rerank.blend import GRID

pytestmark = pytest.mark.unit


def head(order: tuple[str, ...], logits: tuple[float, ...]) -> RerankedQuery:
    """A reranked head in retrieval order (ranks 1..n) with the model's logits."""
    ranks = tuple(range(1, len(order) + 1))
    return RerankedQuery(order, logits, ranks, ("tail",), 0.0, 0.0, True, 0)


def test_the_sign_test():
    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 0) == 1 / 32
    assert sign_test(3, 3) == 42 / 64
    assert sign_test(0, 4) == 1.0


def test_the_retrieval_order_is_the_heads_ranks_then_the_tail():
    query = RerankedQuery(("b", "a"), (0.0, 1.0), (2, 1), ("c",), 0.0, 0.0, True, 0)
    assert retrieval_order(query) == ["a", "b", "c"]


def test_a_reranker_that_helps_everywhere_is_adopted():
    # Retrieval puts the relevant "b" second; the model puts it first, in 20 queries.
    reranked = {f"q{i}": head(("a", "b", "c"), (0.1, 2.0, -1.0)) for i in range(20)}
    qrels = {q: {"b": 1} for q in reranked}
    choice = choose_blend(qrels, reranked)
    assert choice.adopted and choice.weight == choice.best == 0.0
    assert (choice.wins, choice.losses) == (20, 0) and choice.p_value < 1e-5
    assert choice.entry()["adopted"] is True
    assert explain(choice.entry()).startswith("weight 0 beats the retrieval order (20 wins")


def test_a_gain_on_two_queries_keeps_the_retrieval_order():
    helped = {f"h{i}": head(("a", "b", "c"), (0.1, 2.0, -1.0)) for i in range(2)}
    same = {f"s{i}": head(("b", "a", "c"), (2.0, 0.1, -1.0)) for i in range(18)}
    reranked = {**helped, **same}
    qrels = {q: {"b": 1} for q in reranked}
    choice = choose_blend(qrels, reranked)
    assert choice.best == 0.0 and choice.grid["0"] > choice.grid["100"]  # the best on average
    assert (choice.wins, choice.losses) == (2, 0) and choice.p_value == 0.25
    assert not choice.adopted and choice.weight == max(GRID)
    assert "did not beat it significantly (2 wins, 0 losses, p=0.25)" in choice.why()
