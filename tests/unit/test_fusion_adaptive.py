"""Query-adaptive fusion (search.fusion_adaptive): its signals, its share, its dispatch."""

import pytest

from search import fusion, fusion_adaptive
from search.errors import InvalidRequest
from search.fusion import FusionChoice
from search.fusion_adaptive import AdaptiveModel, Term, signals
from search.request import validate
from search.types import SearchRequest

pytestmark = pytest.mark.unit

BM25 = [(f"b{i}", 10.0 - i) for i in range(12)]  # 10 .. 1: falls 90% of its top over ten
VECTOR = [("b0", 0.8), ("b1", 0.78)] + [(f"v{i}", 0.76 - 0.001 * i) for i in range(10)]


def test_signals_read_each_legs_head():
    got = signals(BM25, VECTOR)
    assert got["bm25_gap"] == pytest.approx(0.9)
    assert got["vector_gap"] == pytest.approx((0.8 - 0.753) / 0.8)
    assert got["vector_top"] == pytest.approx(0.8)
    assert got["overlap"] == pytest.approx(0.2)  # b0 and b1 in both top 10s


def test_signals_of_an_empty_or_negative_leg_are_zero():
    assert signals([], [("a", -0.2), ("b", -0.5)]) == {
        "bm25_gap": 0.0,
        "vector_gap": 0.0,
        "vector_top": -0.2,
        "overlap": 0.0,
    }


def test_the_share_moves_with_a_signal_and_stays_in_bounds():
    model = AdaptiveModel(0.3, {"vector_gap": Term(-0.1, 0.2, 0.1)}, low=0.1, high=0.9)
    assert model.share({"vector_gap": 0.2}) == pytest.approx(0.3)  # at the mean: the base
    assert model.share({"vector_gap": 0.4}) == pytest.approx(0.1)  # two sds up, clipped
    assert model.share({"vector_gap": -10}) == pytest.approx(0.9)
    assert AdaptiveModel(0.3).share({"vector_gap": 5.0}) == 0.3  # no terms: the default
    assert "vector_gap 0.40 (-0.20)" in model.explain({"vector_gap": 0.4})
    assert model.explain({"vector_gap": 0.2}) == "bm25 share 0.30 from base 0.30"


def test_a_model_survives_its_json_form():
    model = AdaptiveModel(0.3, {"overlap": Term(0.05, 0.4, 0.2)}, learned_on=("scifact/train",))
    assert AdaptiveModel.of(model.entry()) == model


def test_the_shipped_model_loads_and_names_only_known_signals():
    model = fusion_adaptive.shipped()
    assert 0 <= model.low <= model.base <= model.high <= 1
    assert set(model.terms) <= set(fusion_adaptive.SIGNALS)


def test_adaptive_fusion_is_bounded_fusion_at_the_weights_it_picked(monkeypatch):
    model = AdaptiveModel(0.3, {"bm25_gap": Term(0.1, 0.5, 0.2)})
    monkeypatch.setattr(fusion_adaptive, "shipped", lambda: model)
    legs = (BM25, VECTOR)
    applied, values = FusionChoice("adaptive").resolved(legs)
    assert values == pytest.approx(signals(*legs), abs=1e-4)
    assert applied.method == "bounded" and applied.weights == (0.5, 0.5)  # 0.3 + 0.1 * 2
    assert fusion.fuse("adaptive", list(legs)) == fusion.bounded(list(legs), (0.5, 0.5))
    assert FusionChoice("adaptive").apply(legs) == applied.apply(legs)
    fixed = FusionChoice("bounded", (0.3, 0.7))
    assert fixed.resolved(legs) == (fixed, None)


def test_adaptive_fusion_takes_no_weights_of_the_request():
    with pytest.raises(InvalidRequest, match="picks its own weights"):
        validate(SearchRequest(query="q", fusion="adaptive", weights=(0.5, 0.5)))
    with pytest.raises(InvalidRequest, match="two result lists"):
        fusion.fuse("adaptive", [BM25])
