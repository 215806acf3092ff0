"""Fusion against values computed by hand (see the comments)."""

import math

import pytest

from search import fusion
from search.errors import InvalidRequest

pytestmark = pytest.mark.unit

A = [("a", 3.0), ("b", 2.0), ("c", 1.0)]
B = [("c", 0.9), ("a", 0.5), ("d", 0.1)]


def as_dict(fused):
    return dict(fused)


def test_rrf_hand_computed():
    out = fusion.rrf([A, B])
    # a: 1/61 + 1/62, c: 1/63 + 1/61, b: 1/62, d: 1/63 (ranks from 1, k = 60)
    assert [d for d, _ in out] == ["a", "c", "b", "d"]
    got = as_dict(out)
    assert math.isclose(got["a"], 1 / 61 + 1 / 62)
    assert math.isclose(got["c"], 1 / 63 + 1 / 61)
    assert math.isclose(got["b"], 1 / 62)
    assert math.isclose(got["d"], 1 / 63)


def test_rrf_ignores_raw_scores_and_uses_k():
    scaled = [(d, s * 1000) for d, s in B]
    assert fusion.rrf([A, scaled]) == fusion.rrf([A, B])
    got = as_dict(fusion.rrf([A], k=1))
    assert math.isclose(got["a"], 1 / 2) and math.isclose(got["c"], 1 / 4)


def test_weighted_rrf_hand_computed():
    out = fusion.weighted_rrf([A, B], [1.0, 2.0])
    # c: 1/63 + 2/61 = 0.048660 beats a: 1/61 + 2/62 = 0.048651
    assert [d for d, _ in out] == ["c", "a", "d", "b"]
    assert math.isclose(as_dict(out)["c"], 1 / 63 + 2 / 61)
    assert math.isclose(as_dict(out)["d"], 2 / 63)


def test_minmax_hand_computed():
    got = as_dict(fusion.minmax([A, B]))
    # A -> a 1, b .5, c 0; B -> c 1, a .5, d 0
    assert got == pytest.approx({"a": 1.5, "b": 0.5, "c": 1.0, "d": 0.0})


def test_zscore_hand_computed_and_ties_break_by_id():
    out = fusion.zscore([A, B])
    z = 1 / math.sqrt(2 / 3)  # (3 - 2) / population sd of [3, 2, 1]
    got = as_dict(out)
    assert got == pytest.approx({"a": z, "b": 0.0, "c": 0.0, "d": -z})
    assert [d for d, _ in out] == ["a", "b", "c", "d"]


def test_dbsf_hand_computed():
    got = as_dict(fusion.dbsf([A, B]))
    sd = math.sqrt(2 / 3)
    high_a = (3 - (2 - 3 * sd)) / (6 * sd)  # a in leg A, 0.70412
    assert got["a"] == pytest.approx(high_a + 0.5)
    assert got["c"] == pytest.approx((1 - high_a) + high_a)
    assert got["b"] == pytest.approx(0.5)
    assert got["d"] == pytest.approx(1 - high_a)


def test_weights_scale_normalised_methods():
    got = as_dict(fusion.minmax([A, B], [2.0, 0.0]))
    assert got == pytest.approx({"a": 2.0, "b": 1.0, "c": 0.0, "d": 0.0})


def test_degenerate_inputs():
    assert fusion.rrf([]) == []
    assert fusion.rrf([[], []]) == []
    assert as_dict(fusion.minmax([[("x", 5.0)], []])) == {"x": 1.0}
    assert as_dict(fusion.zscore([[("x", 5.0), ("y", 5.0)]])) == {"x": 0.0, "y": 0.0}


def test_bad_arguments_name_the_problem():
    with pytest.raises(InvalidRequest, match="2 result lists"):
        fusion.weighted_rrf([A, B], [1.0])
    with pytest.raises(InvalidRequest, match="non-negative"):
        fusion.minmax([A, B], [1.0, -1.0])
    with pytest.raises(InvalidRequest, match="choose one of"):
        fusion.fuse("borda", [A, B])
    with pytest.raises(InvalidRequest):
        fusion.rrf([A], k=0)


@pytest.mark.parametrize("method", fusion.METHODS)
def test_every_method_is_deterministic_and_sorted(method):
    out = fusion.fuse(method, [A, B], [1.0, 1.0])
    assert out == fusion.fuse(method, [A, B], [1.0, 1.0])
    scores = [s for _, s in out]
    assert scores == sorted(scores, reverse=True)
    assert {d for d, _ in out} == {"a", "b", "c", "d"}


def test_bounded_divides_by_the_top_score_with_zero_as_the_floor():
    got = as_dict(fusion.bounded([A, B]))
    # A / 3 -> a 1, b 2/3, c 1/3; B / 0.9 -> c 1, a 5/9, d 1/9
    assert got == pytest.approx({"a": 1 + 5 / 9, "b": 2 / 3, "c": 1 / 3 + 1, "d": 1 / 9})
    # Unlike min-max, the last candidate keeps its share of the top score.
    assert as_dict(fusion.minmax([A]))["c"] == 0.0 and as_dict(fusion.bounded([A]))["c"] > 0


def test_bounded_weights_and_negative_scores():
    cosines = [("x", 0.5), ("y", -0.2)]
    got = as_dict(fusion.bounded([A, cosines], [0.3, 0.7]))
    assert got["x"] == pytest.approx(0.7) and got["y"] == 0.0
    assert got["a"] == pytest.approx(0.3)
    # A leg whose best score is at or below the floor adds nothing.
    assert as_dict(fusion.bounded([[("z", -1.0)]])) == {"z": 0.0}
    assert fusion.fuse("bounded", [A, B], [0.3, 0.7]) == fusion.bounded([A, B], [0.3, 0.7])
