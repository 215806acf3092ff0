"""The per-query rerank depth policy: when retrieval is sure enough to skip the reranker."""

from __future__ import annotations

import pytest

from search.rerank.depth import DepthPolicy, legs_agree, relative_gap
from search.types import Hit, LegScore

pytestmark = pytest.mark.unit


def hit(doc: str, fused: float, bm25: int | None, vector: int | None) -> Hit:
    return Hit(
        doc, "", "", "", 0, 0, fused, 0,
        bm25=LegScore(0.0, bm25) if bm25 else None,
        vector=LegScore(0.0, vector) if vector else None,
        fused=LegScore(fused, 0),
    )  # fmt: skip


def test_relative_gap_of_the_fused_top_two():
    assert relative_gap([hit("a", 0.8, 1, 1), hit("b", 0.6, 2, 2)]) == pytest.approx(0.25)
    assert relative_gap([hit("a", 0.8, 1, 1)]) is None
    assert relative_gap([hit("a", 0.0, 1, 1), hit("b", 0.0, 2, 2)]) is None
    assert relative_gap([]) is None


def test_legs_agree_only_when_the_top_hit_is_first_in_both():
    assert legs_agree([hit("a", 1.0, 1, 1)])
    assert not legs_agree([hit("a", 1.0, 1, 2)])
    assert not legs_agree([hit("a", 1.0, 1, None)])  # one leg never saw it
    assert not legs_agree([])


@pytest.mark.parametrize(
    ("gap", "hits", "depth"),
    [
        (0.2, [hit("a", 1.0, 1, 1), hit("b", 0.7, 2, 2)], 0),
        (0.2, [hit("a", 1.0, 1, 1), hit("b", 0.9, 2, 2)], 50),  # too close
        (0.0, [hit("a", 1.0, 1, 2), hit("b", 0.1, 2, 1)], 50),  # legs disagree
        (None, [hit("a", 1.0, 1, 1), hit("b", 0.1, 2, 2)], 50),  # off
        (0.2, [hit("a", 1.0, 1, 1)], 50),  # one hit: no gap to read
    ],
)
def test_depth_is_zero_when_sure_else_the_window(gap, hits, depth):
    assert DepthPolicy(gap).depth(hits, 50) == depth
