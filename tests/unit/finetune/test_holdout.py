"""Which queries a fine-tuned model's calibration may use: the ones its fine-tune held out."""

from __future__ import annotations

import pytest

from search.errors import InvalidRequest
from search.finetune.data import split_by_query
from search.finetune.holdout import held_out_ids

pytestmark = pytest.mark.unit

JUDGED = [f"q{i}" for i in range(40)]
CARD = {
    "data": {"corpus_sha256": "abc", "split": "train", "validation_queries": 4},
    "hyperparameters": {"val_fraction": 0.1, "seed": 3},
}


def test_another_corpus_or_split_leaves_every_query_usable():
    assert held_out_ids(CARD, "set", "other", "train", JUDGED) is None
    assert held_out_ids(CARD, "set", "abc", "dev", JUDGED) is None
    assert held_out_ids({}, "set", "abc", "train", JUDGED) is None


def test_the_card_lists_the_held_out_ids():
    card = {**CARD, "data": {**CARD["data"], "validation_ids": ["q3", "q7", "gone"]}}
    assert held_out_ids(card, "set", "abc", "train", JUDGED) == ["q3", "q7"]


def test_an_older_card_is_recomputed_from_its_seed_and_fraction():
    expected = split_by_query(JUDGED, 0.1, 3).validation
    assert held_out_ids(CARD, "set", "abc", "train", JUDGED) == list(expected)
    assert held_out_ids(CARD, "set", "abc", "train", list(reversed(JUDGED))) == list(expected)


def test_a_split_that_cannot_be_recomputed_is_refused():
    with pytest.raises(InvalidRequest, match="cannot be told apart"):
        held_out_ids(CARD, "set", "abc", "train", JUDGED[:10])
