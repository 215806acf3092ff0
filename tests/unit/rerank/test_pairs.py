"""Pair building that needs no tokenizer: windows over long passages, the best window."""

from __future__ import annotations

import pytest

from search.rerank.pairs import Pair, best_windows, windows

pytestmark = pytest.mark.unit


def test_windows_cut_at_word_boundaries_unless_a_word_is_too_long():
    # 10 words of 3 tokens each, room 8: a span never ends inside a word.
    words = [w for w in range(10) for _ in range(3)]
    spans = windows(words, 8)
    assert spans[:3] == [(0, 6), (3, 9), (6, 12)] and spans[-1][1] == 30
    assert all(b % 3 == 0 and e % 3 == 0 for b, e in spans)
    assert all(after[0] < before[1] for before, after in zip(spans, spans[1:], strict=False))
    # One 20-token word (e.g. unspaced Chinese): plain token windows, overlap 2.
    assert windows([0] * 20, 8) == [(0, 8), (6, 14), (12, 20)]
    assert windows([0, 1, 2], 8) == [(0, 3)]


def test_best_window_per_passage_in_passage_order():
    def pair(index: int, start: int) -> Pair:
        return Pair(index, [0], [0], start, start + 1)

    pairs = [pair(1, 0), pair(0, 0), pair(1, 5), pair(1, 9), pair(2, 0)]
    best = best_windows(pairs, [0.5, -1.0, 2.0, 2.0, 0.0], 3)
    # Passage 1's best is its window at 5: a later tie does not replace it.
    assert best == [(-1.0, pairs[1]), (2.0, pairs[2]), (0.0, pairs[4])]
