"""bench/abstain.py's threshold rules, on made-up relevances."""

from __future__ import annotations

import types

import pytest
from support.bench_scripts import load_bench

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def bench() -> types.ModuleType:
    return load_bench("abstain")


def test_the_separating_value_abstains_most_without_the_answer(bench):
    present = [0.9, 0.8, 0.7, 0.2]
    removed = [0.1, 0.15, 0.3, 0.75]
    value, separation = bench.separating(present, removed)
    # Just above 0.15: two of four without the answer abstain, none with it (0.5); just
    # above 0.3 separates as well (three of four against one of four): the lower is kept.
    assert 0.15 < value < 0.16 and separation == pytest.approx(0.5)
    assert sum(r < value for r in removed) == 2 and sum(r < value for r in present) == 0


def test_no_separation_gives_a_value_that_never_abstains(bench):
    value, separation = bench.separating([0.1, 0.2], [0.5, 0.6])
    assert (value, separation) == (0.0, 0.0)


def test_the_keep_rule_keeps_a_relevant_passage_for_that_share(bench):
    hits = {"a": [("d1", 0.9), ("x", 0.5)], "b": [("x", 0.6), ("d2", 0.2)]}
    qrels = {"a": {"d1": 1}, "b": {"d2": 1}}
    assert bench.threshold(hits, qrels, 1.0) == 0.2
    assert bench.threshold(hits, qrels, 0.5) == 0.9
