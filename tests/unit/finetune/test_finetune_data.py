"""Training data for fine-tuning: the split by query, mined negatives, groups, fingerprint."""

from __future__ import annotations

import random

import pytest

from search.errors import InvalidRequest
from search.finetune.data import (
    JudgedQueries,
    build_groups,
    data_fingerprint,
    mine_negatives,
    near_duplicate,
    split_by_query,
    words,
)

pytestmark = pytest.mark.unit

TEXTS = {
    "pos": "how to store rice in a cool dry place",
    "copy": "How to store rice in a cool, dry place!",  # an unjudged positive in disguise
    "hard": "rice cookers and how they heat water",
    "other": "bike chain care before winter",
    "zero": "rice fields in spring",
}
DATA = JudgedQueries({"q": "store rice"}, {"q": {"pos": 1, "zero": 0}})


def retrieve(query: str, depth: int) -> list[str]:
    return ["copy", "pos", "hard", "zero", "other"][:depth]


def test_split_holds_out_queries_stably():
    qids = [f"q{i}" for i in range(20)]
    split = split_by_query(qids, 0.1, seed=0)
    assert len(split.validation) == 2 and not set(split.validation) & set(split.train)
    assert sorted(split.train + split.validation) == sorted(qids)
    # Adding queries never moves one already held out into training.
    bigger = split_by_query([*qids, *(f"x{i}" for i in range(20))], 0.1, seed=0)
    assert set(split.validation) <= set(bigger.validation) | set(bigger.train)
    assert split_by_query(qids, 0.1, seed=0) == split
    assert split_by_query(qids, 0.0).validation == ()
    assert len(split_by_query(qids[:3], 0.1).validation) == 1  # at least one
    with pytest.raises(InvalidRequest):
        split_by_query(qids, 1.0)


def test_near_duplicates_of_a_positive_and_positives_are_not_negatives():
    assert near_duplicate(words(TEXTS["pos"]), words(TEXTS["copy"]), 0.8)
    assert not near_duplicate(words(TEXTS["pos"]), words(TEXTS["hard"]), 0.8)
    pools = mine_negatives(DATA, ["q"], retrieve, TEXTS.get, depth=5)
    assert pools == {"q": ["hard", "zero", "other"]}  # judged 0 is a true negative


def test_skip_top_and_given_negatives():
    given = JudgedQueries(DATA.queries, DATA.qrels, {"q": ["other", "pos"]})
    pools = mine_negatives(given, ["q"], retrieve, TEXTS.get, depth=5, skip_top=3)
    assert pools == {"q": ["other", "zero"]}  # given first (never a positive), then rank 4+


def test_groups_have_one_positive_and_n_negatives_topped_up_from_the_corpus():
    pools = {"q": ["hard"]}
    groups = build_groups(DATA, ["q"], pools, TEXTS.get, 3, random.Random(0), list(TEXTS))
    assert len(groups) == 1
    group = groups[0]
    assert group.query == "store rice" and group.positive == TEXTS["pos"]
    assert len(group.negatives) == 3 and TEXTS["hard"] in group.negatives
    assert TEXTS["pos"] not in group.negatives


def test_fingerprint_changes_with_corpus_qrels_and_split():
    split = split_by_query(["q"], 0.0)
    base = data_fingerprint("c1", DATA, split)
    assert base == data_fingerprint("c1", DATA, split)
    assert base != data_fingerprint("c2", DATA, split)
    other = JudgedQueries(DATA.queries, {"q": {"pos": 1, "hard": 1}})
    assert base != data_fingerprint("c1", other, split)
    assert base != data_fingerprint("c1", DATA, split_by_query(["q", "r"], 0.5))
