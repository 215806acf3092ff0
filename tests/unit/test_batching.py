"""Batching rules (search.batching): plain batches and padded-token budgets."""

import pytest

from search.batching import batched, budget_batches

pytestmark = pytest.mark.unit


def test_batched_keeps_order_and_refuses_size_zero():
    assert list(batched(range(5), 2)) == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError):
        list(batched([1], 0))


def test_budget_batches_go_longest_first_within_the_padded_budget():
    lengths = [3, 10, 4, 10, 2, 1]
    # 10 and 10 fill the 20; then 4, 3, 2 and 1 together: 4 items at width 4 = 16.
    assert budget_batches(lengths, 20) == [[1, 3], [2, 0, 4, 5]]
    # Every position exactly once, and no batch over the budget.
    for budget in (1, 5, 12, 40):
        batches = budget_batches(lengths, budget)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert all(len(b) == 1 or len(b) * lengths[b[0]] <= budget for b in batches)


def test_budget_batches_cap_the_items_and_pad_the_width():
    assert budget_batches([1] * 5, 100, max_items=2) == [[0, 1], [2, 3], [4]]
    # A width rounded up to 8 (as on a GPU) fits fewer items: 3 -> 8, 8 * 2 = 16.
    assert budget_batches([3, 3, 3], 16, width=lambda n: -(-n // 8) * 8) == [[0, 1], [2]]
    with pytest.raises(ValueError):
        budget_batches([1], 0)
