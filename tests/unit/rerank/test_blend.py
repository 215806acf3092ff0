"""The rerank blend: z-scored logits plus a weighted, z-scored reciprocal-rank prior."""

from __future__ import annotations

import math
import random

import pytest

from search.errors import InvalidRequest
from search.rerank.blend import Blend, best_first, blended_scores, retrieval_rank
from search.types import Hit, LegScore

pytestmark = pytest.mark.unit


def shuffled_head(n: int, seed: int) -> tuple[list[float], list[int]]:
    """Random logits for a head whose retrieval ranks arrive out of order."""
    rng = random.Random(seed)
    ranks = list(range(1, n + 1))
    rng.shuffle(ranks)
    return [rng.gauss(0, 3) for _ in ranks], ranks


@pytest.mark.parametrize("seed", range(5))
def test_weight_zero_is_the_pure_rerank_order(seed):
    logits, ranks = shuffled_head(50, seed)
    pure = sorted(range(50), key=lambda i: (-logits[i], ranks[i]))
    assert best_first(logits, ranks) == pure
    assert best_first(logits, ranks, Blend(0.0)) == pure


@pytest.mark.parametrize("seed", range(5))
def test_a_huge_weight_is_the_retrieval_order(seed):
    logits, ranks = shuffled_head(50, seed)
    order = best_first(logits, ranks, Blend(1e6))
    assert [ranks[i] for i in order] == list(range(1, 51))


def test_hand_computed_scores():
    # Logits 1, 3, 2 have z-scores -1.2247, 1.2247, 0; the priors 1/61, 1/62, 1/63
    # nearly the mirror image. Weight 1 lifts the first-retrieved past the third.
    scores = blended_scores([1.0, 3.0, 2.0], [1, 2, 3], Blend(1.0))
    assert scores == pytest.approx([0.0065, 1.2116, -1.2181], abs=1e-4)
    assert best_first([1.0, 3.0, 2.0], [1, 2, 3], Blend(1.0)) == [1, 0, 2]
    # The z-scores make the blend blind to the logits' scale and offset.
    assert blended_scores([10.0, 30.0, 20.0], [1, 2, 3], Blend(1.0)) == pytest.approx(scores)
    assert blended_scores([-5.0, -3.0, -4.0], [1, 2, 3], Blend(1.0)) == pytest.approx(scores)


def test_ties_break_by_retrieval_rank_then_input_order():
    # Equal logits: the prior alone decides, and with weight 0 the retrieval rank.
    assert best_first([2.0, 2.0, 2.0], [3, 1, 2]) == [1, 2, 0]
    assert best_first([2.0, 2.0, 2.0], [3, 1, 2], Blend(0.5)) == [1, 2, 0]
    # Equal blended scores keep retrieval order: the same logit, the same rank.
    assert best_first([1.0, 1.0], [4, 4], Blend(2.0)) == [0, 1]
    assert best_first([5.0], [7], Blend(3.0)) == [0]
    assert best_first([], [], Blend(3.0)) == []


@pytest.mark.parametrize("weight", [-0.1, math.inf, math.nan])
def test_bad_weights_are_refused(weight):
    with pytest.raises(InvalidRequest, match="weight"):
        Blend(weight)
    with pytest.raises(InvalidRequest, match="k must"):
        Blend(1.0, k=0)


def test_mismatched_lengths_are_refused():
    with pytest.raises(InvalidRequest, match="2 logits for 1 ranks"):
        best_first([1.0, 2.0], [1], Blend(1.0))


def test_retrieval_rank_is_the_fused_rank_else_the_only_leg():
    base = {"doc_id": "d", "title": "", "text": "", "chunk_id": "c", "start": 0, "end": 0}
    fused = Hit(**base, score=0.9, rank=1, bm25=LegScore(3.0, 2), fused=LegScore(0.5, 4))
    vector_only = Hit(**base, score=0.9, rank=1, vector=LegScore(0.7, 6))
    assert retrieval_rank(fused) == 4 and retrieval_rank(vector_only) == 6


def test_resolve_blend_order_and_card_parsing():
    from search.rerank.blend import card_blend_weight, resolve_blend

    assert resolve_blend(collection=None, setting=None, card=None) == (None, "default")
    assert resolve_blend(collection=None, setting=None, card=2.0) == (Blend(2.0), "card")
    assert resolve_blend(collection=None, setting=0.0, card=2.0) == (None, "setting")
    assert resolve_blend(collection=0.5, setting=3.0, card=2.0) == (Blend(0.5), "collection")
    assert card_blend_weight({"blend": {"weight": 1}}) == 1.0
    for card in ({}, {"blend": 3}, {"blend": {"weight": "1"}}, {"blend": {"weight": True}}):
        assert card_blend_weight(card) is None
