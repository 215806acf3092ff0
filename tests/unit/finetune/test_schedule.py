"""When fine-tuning validates (search.finetune.train.evaluation_due)."""

import pytest

from search.finetune.train import evaluation_due

pytestmark = pytest.mark.unit


def due(every: int, total: int) -> list[int]:
    return [s for s in range(1, total + 1) if evaluation_due(s, every, total)]


def test_every_interval_and_the_last_step():
    assert due(3, 10) == [3, 6, 9, 10]  # 9 is a whole half-interval before 10
    assert due(207, 415) == [207, 415]  # not 414 as well
    assert due(5, 10) == [5, 10]
    assert due(1, 3) == [1, 2, 3]
    assert due(10, 4) == [4]
