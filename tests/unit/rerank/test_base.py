"""The rules every reranker's scores obey: ``sigmoid`` and ``check_scores``."""

from __future__ import annotations

import math

import pytest

from search.errors import BackendUnavailable
from search.rerank import check_scores, sigmoid
from search.types import RerankBatch, RerankScore

pytestmark = pytest.mark.unit


def test_sigmoid_is_stable_at_the_extremes():
    assert sigmoid(0.0) == 0.5
    assert sigmoid(1000.0) == 1.0 and sigmoid(-1000.0) == 0.0
    for x in (-7.25, -0.3, 0.3, 7.25):
        assert math.isclose(sigmoid(x), 1 / (1 + math.exp(-x)), rel_tol=1e-15)


def batch(n: int) -> RerankBatch:
    return RerankBatch([RerankScore(0.0, 0.5) for _ in range(n)])


def test_one_score_per_passage_passes():
    check_scores(batch(3), 3)
    check_scores(batch(0), 0)
    check_scores([(0.1, 0, 4), (0.2, 0, 5)], 2)  # raw rows, as a worker returns them


@pytest.mark.parametrize("got, expected", [(2, 3), (4, 3), (0, 1)])
def test_another_count_is_a_backend_failure(got, expected):
    with pytest.raises(BackendUnavailable) as info:
        check_scores(batch(got), expected)
    assert str(info.value) == f"reranker returned {got} scores for {expected} passages"
    assert info.value.backend == "rerank"


def test_the_error_names_its_source_and_carries_data():
    with pytest.raises(BackendUnavailable) as info:
        check_scores([(0.1, 0, 4)], 2, "rerank", source="worker", reason="malformed")
    assert str(info.value) == "worker returned 1 scores for 2 passages"
    assert info.value.data == {"backend": "rerank", "reason": "malformed"}
