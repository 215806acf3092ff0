"""Batches of work: consecutive lists of at most ``size`` items, and model batches
under a padded-token budget.

``batched`` serves every batched loop (indexing documents, writing points);
``itertools.batched`` would do, but it is Python 3.12+. ``budget_batches`` is the
one rule for model inputs, the cross-encoder's pairs and the embedder's texts:
longest first, so the widest batch runs first (an out-of-memory error shows at
once) and each batch holds items of about one length (little padding), with as
many items as fit in the budget (short texts in few forward passes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import TypeVar

T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of at most ``size`` items, in order; ``size`` must be >= 1."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def budget_batches(
    lengths: Sequence[int],
    budget: int,
    *,
    width: Callable[[int], int] = lambda n: n,
    max_items: int | None = None,
) -> list[list[int]]:
    """Positions of ``lengths``, longest first, grouped so that each batch's padded size
    (its item count times ``width`` of its first, longest, item) stays within ``budget``.

    An item wider than the budget gets a batch of its own; ``max_items`` caps the
    items of a batch. Equal lengths keep their order.
    """
    if budget < 1 or (max_items is not None and max_items < 1):
        raise ValueError(f"budget and max_items must be >= 1, got {budget}, {max_items}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    for i in order:
        if batches:
            last = batches[-1]
            fits = (len(last) + 1) * width(lengths[last[0]]) <= budget
            if fits and (max_items is None or len(last) < max_items):
                last.append(i)
                continue
        batches.append([i])
    return batches
