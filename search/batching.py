"""Batches of work: consecutive lists of at most ``size`` items.

One helper for every batched loop (indexing documents, writing points);
``itertools.batched`` would do, but it is Python 3.12+.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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
