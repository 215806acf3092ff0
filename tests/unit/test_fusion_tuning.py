"""Per-collection fusion tuning: adopted only on held-out evidence (search.fusion_tuning)."""

import pytest

from search.errors import InvalidRequest
from search.fusion import FusionChoice
from search.fusion_tuning import explain, fold_of, tune

pytestmark = pytest.mark.unit

DEFAULT = FusionChoice("bounded", (0.9, 0.1))
NOISE = [(f"n{i}", 10.0 - i) for i in range(8)]


def vector_knows(n: int):
    """``n`` queries where BM25 ranks noise first and the vector leg ranks the answer first."""
    qrels, legs = {}, {}
    for i in range(n):
        answer = f"a{i}"
        qrels[f"q{i}"] = {answer: 1}
        bm25 = [*NOISE, (answer, 1.0)]
        vector = [(answer, 0.9), *[(d, 0.5 - 0.01 * j) for j, (d, _) in enumerate(NOISE)]]
        legs[f"q{i}"] = (bm25, vector)
    return qrels, legs


def test_a_fusion_that_wins_on_held_out_queries_is_adopted():
    qrels, legs = vector_knows(40)
    tuning = tune(qrels, legs, DEFAULT)
    assert tuning.adopted and tuning.chosen == tuning.best != DEFAULT
    assert tuning.cv_gain > 0.5 and tuning.wins == 40 and tuning.losses == 0
    entry = tuning.entry()
    assert entry["adopted"] and FusionChoice.of(entry) == tuning.best
    assert "adopted" in explain(entry)


def test_no_held_out_gain_keeps_the_default():
    # Both legs agree: every fusion ranks the same, so nothing beats the default.
    qrels = {f"q{i}": {f"a{i}": 1} for i in range(30)}
    legs = {
        q: ([(d, 2.0), ("x", 1.0)], [(d, 0.8), ("x", 0.1)])
        for q, rels in qrels.items()
        for d in rels
    }
    tuning = tune(qrels, legs, DEFAULT)
    assert not tuning.adopted and tuning.chosen == DEFAULT
    assert tuning.wins == tuning.losses == 0 and tuning.cv_gain == 0
    assert explain(tuning.entry()).startswith("the default kept")


def test_too_few_judged_queries_is_refused():
    qrels, legs = vector_knows(10)
    with pytest.raises(InvalidRequest, match="at least 20 judged queries"):
        tune(qrels, legs, DEFAULT)


def test_folds_come_from_the_query_id():
    assert fold_of("q7", 5) == fold_of("q7", 5)
    assert len({fold_of(f"q{i}", 5) for i in range(100)}) == 5
