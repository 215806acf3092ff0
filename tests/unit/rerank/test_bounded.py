"""Every rerank call answers or fails by its deadline; late work stops instead of finishing."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from search.errors import BackendUnavailable
from search.rerank import BoundedReranker, CrossEncoderReranker
from search.rerank.pairs import MAX_DOC_CHARS, MAX_DOC_TOKENS
from search.types import RerankBatch, RerankScore

pytestmark = pytest.mark.unit


class HeldModel:
    """Test double for a fault we cannot cause on demand: a model slower than any deadline.

    It blocks until the test releases it, and records the deadline it was given.
    """

    model_key = "held@test:512"

    def __init__(self) -> None:
        self.release, self.entered = threading.Event(), threading.Event()
        self.deadlines: list[float | None] = []

    def rerank(
        self, query: str, passages: Sequence[str], *, deadline: float | None = None
    ) -> RerankBatch:
        self.deadlines.append(deadline)
        self.entered.set()
        self.release.wait(30)
        return RerankBatch([RerankScore(1.0, 0.73) for _ in passages])


def test_the_caller_stops_waiting_at_the_deadline():
    held = HeldModel()
    bounded = BoundedReranker(held, timeout_s=0.3)
    try:
        with pytest.raises(BackendUnavailable, match="missed its 0.3 s deadline"):
            bounded.rerank("q", ["a passage"])
        assert held.entered.is_set() and not held.release.is_set()  # it still ran
        assert bounded.expired == 1
        (deadline,) = held.deadlines
        assert deadline is not None and deadline <= time.monotonic()  # the model was told
    finally:
        held.release.set()
        bounded.close()


def test_a_sooner_caller_deadline_wins_and_answers_in_time_pass():
    held = HeldModel()
    held.release.set()
    bounded = BoundedReranker(held, timeout_s=30)
    soon = time.monotonic() + 5
    assert len(bounded.rerank("q", ["a", "b"], deadline=soon).scores) == 2
    assert held.deadlines == [soon]
    bounded.close()


@pytest.fixture(scope="module")
def model(tiny_reranker_dir: Path) -> CrossEncoderReranker:
    reranker = CrossEncoderReranker(str(tiny_reranker_dir), max_length=64)
    reranker.warm_up()
    return reranker


def test_the_model_is_never_taken_past_the_deadline(model):
    # Another request holds the model: this one gives up at its deadline.
    assert model._forward_lock.acquire(timeout=5)
    try:
        with pytest.raises(BackendUnavailable, match="busy"):
            model.rerank("q", ["a passage"], deadline=time.monotonic() + 0.1)
    finally:
        model._forward_lock.release()
    # A deadline that passed stops the work before the next batch.
    with pytest.raises(BackendUnavailable, match="stopped at its deadline after 0 of"):
        model.rerank("q", ["a passage"], deadline=time.monotonic())
    assert len(model.rerank("q", ["a passage"], deadline=time.monotonic() + 30).scores) == 1


def test_a_huge_document_is_scored_on_its_first_tokens_only(model):
    huge = "tyre pressure matters for grip " * 200_000  # about 6 MB
    pairs = model._encode("tyre pressure", [huge, "short passage"])
    scored = [p for p in pairs if p.index == 0]
    room = 64 - 4  # at most max_length minus specials and query per window
    assert len(scored) <= MAX_DOC_TOKENS // (room // 2) + 2  # windows overlap by a quarter
    assert max(p.end for p in scored) <= MAX_DOC_CHARS
    assert [p for p in pairs if p.index == 1][0].start == 0
    batch = model.rerank("tyre pressure", [huge])
    assert 0 < batch.scores[0].end <= MAX_DOC_CHARS
