"""The query path over real engines (tantivy, Qdrant Edge, MiniLM) on the sample corpus."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from search.config import Settings
from search.engine import SearchEngine
from search.errors import BackendUnavailable, InvalidRequest
from search.ingest import iter_paths
from search.keyword.elasticsearch_index import ElasticsearchKeywordIndex
from search.pipeline import Pipeline
from search.serialize import result_json
from search.types import Document, SearchRequest
from search.vector.qdrant_server import QdrantServerIndex

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "sample"
DEAD_URL = "http://127.0.0.1:9"  # the discard port: nothing listens there


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    settings = Settings.from_env({}).with_overrides(data_dir=tmp_path_factory.mktemp("pipe"))
    eng = SearchEngine(settings)
    docs = [d for d in iter_paths([SAMPLE / "corpus.jsonl"]) if isinstance(d, Document)]
    report = eng.index(docs)
    assert report.indexed == len(docs) and not report.failed
    yield eng
    eng.close()


def search(engine, query, **kw):
    return engine.search(SearchRequest(query=query, **kw))


def test_hybrid_hits_carry_every_stage(engine):
    result = search(engine, "how to stop a nosebleed", top_k=5)
    assert result.mode == "hybrid" and result.fusion == "bounded" and not result.degraded
    assert result.fusion_source == "setting" and result.fusion_weights == (0.3, 0.7)
    assert {"analyze", "bm25", "embed", "vector", "fusion", "total"} <= set(result.timings_ms)
    both = [h for h in result.hits if h.bm25 and h.vector]
    assert both, "the top hits should be found by both legs"
    for rank, hit in enumerate(result.hits, start=1):
        assert hit.rank == rank and hit.fused is not None and hit.fused.rank == rank
        assert hit.text and 0 <= hit.start < hit.end
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)


def test_adaptive_fusion_says_which_weights_it_applied_and_why(engine):
    result = search(engine, "how to stop a nosebleed", top_k=5, fusion="adaptive")
    assert result.fusion == "adaptive" and result.fusion_source == "request"
    share = result.fusion_weights[0]
    assert 0 < share < 1 and result.fusion_weights[1] == pytest.approx(1 - share)
    assert set(result.fusion_signals) == {"bm25_gap", "vector_gap", "vector_top", "overlap"}
    assert result.fusion_reason.startswith(f"bm25 share {share:.2f}")
    payload = result_json(result)
    assert payload["fusion_signals"] == dict(result.fusion_signals)
    assert all(h["fused"]["weights"] == list(result.fusion_weights) for h in payload["hits"])
    fixed = search(engine, "how to stop a nosebleed", top_k=5, weights=result.fusion_weights)
    assert [h.doc_id for h in fixed.hits] == [h.doc_id for h in result.hits]
    assert fixed.fusion_signals is None and fixed.fusion_reason is None


def test_single_leg_modes_keep_their_own_order(engine):
    bm25 = search(engine, "cast iron pan", mode="bm25", top_k=5)
    assert all(h.vector is None and h.fused is None for h in bm25.hits)
    assert len(bm25.hits) >= 2  # only documents holding a query term match
    assert [h.bm25.rank for h in bm25.hits] == list(range(1, len(bm25.hits) + 1))
    vec = search(engine, "cast iron pan", mode="vector", top_k=5)
    assert all(h.bm25 is None for h in vec.hits) and "bm25" not in vec.timings_ms


@pytest.mark.parametrize("mode", ["bm25", "vector", "hybrid"])
def test_filters_apply_to_both_legs(engine, mode):
    # Mixed-language query so that BM25 has terms in every language to match.
    query = "first aid emergency 急救 紧急"
    result = search(engine, query, mode=mode, top_k=20, filters={"lang": "zh-Hant"})
    assert result.hits
    assert all(h.metadata["lang"] == "zh-Hant" for h in result.hits)
    several = search(engine, query, mode=mode, top_k=50, filters={"lang": ["en", "zh-Hans"]})
    langs = {h.metadata["lang"] for h in several.hits}
    assert langs == {"en", "zh-Hans"}
    both = search(engine, query, mode=mode, top_k=50, filters={"lang": "en", "topic": "first-aid"})
    assert both.hits
    assert all(h.metadata["topic"] == "first-aid" for h in both.hits)
    none = search(engine, query, mode=mode, filters={"lang": "fr"})
    assert none.hits == []


def test_chinese_query_skips_the_english_embedder_and_says_so(engine):
    result = search(engine, "颱風來之前要準備什麼？")
    assert "vector" in result.skipped and "cjk" in result.skipped["vector"]
    assert not result.degraded and result.hits
    assert result.hits[0].metadata["lang"].startswith("zh")
    # Asked explicitly, the vector leg still runs.
    assert search(engine, "颱風來之前要準備什麼？", mode="vector").hits


def test_traditional_query_finds_simplified_documents(engine):
    simplified = search(engine, "紧急备用金", mode="bm25", top_k=3)
    traditional = search(engine, "緊急備用金", mode="bm25", top_k=3)
    assert [h.doc_id for h in simplified.hits] == [h.doc_id for h in traditional.hits]


def test_stopword_only_query_skips_bm25(engine):
    result = search(engine, "the and of")
    assert "bm25" in result.skipped and result.hits


@pytest.mark.parametrize(
    "request_kw",
    [
        {"query": ""},
        {"query": "   "},
        {"query": "x", "mode": "fuzzy"},
        {"query": "x", "top_k": 0},
        {"query": "x", "top_k": 5000},
        {"query": "x", "fusion": "borda"},
        {"query": "x" * 5000},
        {"query": "x", "collection": "Bad Name!"},
    ],
)
def test_bad_requests_are_rejected_with_a_reason(engine, request_kw):
    with pytest.raises(InvalidRequest):
        engine.search(SearchRequest(**request_kw))


def dead_pipeline(engine, *, keyword_dead=False, vector_dead=False, **overrides):
    col = engine.collection()
    settings = engine.settings.with_overrides(**overrides)
    keyword = col.keyword
    vector = col.vector
    if keyword_dead:
        keyword = ElasticsearchKeywordIndex(
            settings.with_overrides(es_url=DEAD_URL, es_timeout_s=0.5, es_max_retries=0)
        )
    if vector_dead:
        dead = settings.with_overrides(
            vector_backend="qdrant", qdrant_url=DEAD_URL, qdrant_timeout_s=0.5
        )
        vector = QdrantServerIndex(dead, engine.embedder.dim)
    return Pipeline(settings, keyword, vector, engine.embedder)


def test_vector_leg_down_bm25_answers(engine):
    result = dead_pipeline(engine, vector_dead=True).search(SearchRequest(query="cast iron pan"))
    assert result.degraded == ["vector"] and result.hits
    assert list(result.degraded_reasons) == ["vector"] and result.degraded_reasons["vector"]
    assert all(h.vector is None for h in result.hits)


def test_bm25_leg_down_vector_answers(engine):
    result = dead_pipeline(engine, keyword_dead=True).search(SearchRequest(query="cast iron pan"))
    assert result.degraded == ["bm25"] and result.hits
    assert all(h.bm25 is None for h in result.hits)


def test_both_legs_down_is_an_error(engine):
    with pytest.raises(BackendUnavailable, match="no retrieval leg answered"):
        dead_pipeline(engine, keyword_dead=True, vector_dead=True).search(
            SearchRequest(query="pan")
        )


class HangingVector:
    """Test double for a fault we cannot cause on demand: a vector engine that hangs.

    It blocks until the test releases it (or 30 s pass), so "the answer came
    while the leg still hung" is an event check, not a wall-clock bound.
    """

    name = "hanging"

    def __init__(self, inner):
        self.inner, self.dim = inner, inner.dim
        self.release, self.entered = threading.Event(), threading.Event()

    def search(self, *args, **kwargs):
        self.entered.set()
        self.release.wait(30)
        return self.inner.search(*args, **kwargs)


def test_a_late_leg_is_dropped_at_its_deadline(engine):
    col = engine.collection()
    settings = engine.settings.with_overrides(leg_timeout_s=0.5)
    vector = HangingVector(col.vector)
    pipeline = Pipeline(settings, col.keyword, vector, engine.embedder)
    try:
        result = pipeline.search(SearchRequest(query="cast iron pan"))
        assert vector.entered.is_set() and not vector.release.is_set()
    finally:
        vector.release.set()
    assert result.degraded == ["vector"] and result.hits
    assert result.degraded_reasons == {"vector": "missed its 0.5 s deadline"}


def test_result_serialises_to_json(engine):
    payload = json.loads(json.dumps(result_json(search(engine, "router restart"))))
    assert payload["hits"][0]["offsets"][1] > payload["hits"][0]["offsets"][0]
