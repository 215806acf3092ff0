"""What ``sieve eval`` says each mode ran (search.eval_notes)."""

import pytest

from search.eval_notes import RunNotes, describe
from search.types import SearchResult

pytestmark = pytest.mark.unit


def result(**kw) -> SearchResult:
    return SearchResult(query="q", mode="hybrid", hits=[], timings_ms={}, **kw)


def test_fusions_skips_and_degradations_are_counted_with_their_first_reason():
    notes = RunNotes()
    fused = {"fusion": "bounded", "fusion_weights": (0.3, 0.7), "fusion_source": "setting"}
    notes.add(result(**fused))
    notes.add(result(**fused))
    notes.add(result(skipped={"vector": "embedder x does not serve zh queries (en)"}))
    notes.add(result(degraded=["vector"], degraded_reasons={"vector": "missed its 5 s deadline"}))
    summary = notes.summary()
    assert summary["queries"] == 4
    assert summary["fusion"] == [
        {"method": "bounded", "weights": [0.3, 0.7], "source": "setting", "queries": 2}
    ]
    assert summary["skipped"]["vector"]["queries"] == 1
    assert describe("hybrid", summary) == [
        "    hybrid: fused by bounded (0.3, 0.7) from the setting on 2 of 4 queries",
        "    hybrid: vector skipped on 1 of 4 queries (embedder x does not serve zh queries (en))",
        "    hybrid: vector degraded on 1 of 4 queries (missed its 5 s deadline)",
    ]


def test_a_method_without_weights_is_named_alone():
    notes = RunNotes()
    notes.add(result(fusion="rrf", fusion_source="request"))
    (line,) = describe("hybrid", notes.summary())
    assert line == "    hybrid: fused by rrf from the request on 1 of 1 queries"


def test_adaptive_weights_are_summarised_not_listed_one_by_one():
    notes = RunNotes()
    for share in (0.2, 0.3, 0.4):
        notes.add(
            result(fusion="adaptive", fusion_weights=(share, 1 - share), fusion_source="setting")
        )
    summary = notes.summary()
    assert summary["fusion"] == [
        {"method": "adaptive", "weights": None, "source": "setting", "queries": 3}
    ]
    assert summary["adaptive"]["bm25_share"] == {"min": 0.2, "p50": 0.3, "mean": 0.3, "max": 0.4}
    assert describe("hybrid", summary)[1] == (
        "    hybrid: adaptive bm25 share per query: min 0.20, median 0.30, mean 0.30, max 0.40"
    )
