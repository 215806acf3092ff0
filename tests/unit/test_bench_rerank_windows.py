"""bench/rerank_windows.py's window aggregates, on made-up logits."""

from __future__ import annotations

import pytest
from support.bench_scripts import load_bench

pytestmark = pytest.mark.unit


def test_each_aggregate_scores_a_passage_from_its_own_windows():
    bench = load_bench("rerank_windows")
    # Passage 0 has three windows, passage 1 one, passage 2 two.
    scores = bench.passage_scores([0, 0, 0, 1, 2, 2], [1.0, 4.0, -2.0, 2.5, -1.0, 3.0], 3)
    assert scores["best"] == [4.0, 2.5, 3.0]
    assert scores["first"] == [1.0, 2.5, -1.0]
    assert scores["mean"] == pytest.approx([1.0, 2.5, 1.0])
