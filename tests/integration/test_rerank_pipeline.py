"""Reranking inside the query path: real engines, the tiny cross-encoder, real Redis."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from search.config import Settings
from search.engine import SearchEngine, build_reranker
from search.ingest import iter_paths
from search.pipeline import Pipeline
from search.rerank import CachingReranker, CrossEncoderReranker
from search.scores import LruScoreStore, RedisScoreStore
from search.types import Document, SearchRequest

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "sample"
QUERY = "how do I fix a flat tire on my bike"


class CountingReranker:
    """Wraps the real tiny model and counts the passages it is asked to score."""

    def __init__(self, inner):
        self.inner, self.passages = inner, 0

    @property
    def model_key(self):
        return self.inner.model_key

    def rerank(self, query, passages, *, deadline=None):
        self.passages += len(passages)
        return self.inner.rerank(query, passages, deadline=deadline)


def sample_docs():
    return [d for d in iter_paths([SAMPLE / "corpus.jsonl"]) if isinstance(d, Document)]


@pytest.fixture(scope="module")
def model(tiny_reranker_dir):
    return CountingReranker(CrossEncoderReranker(str(tiny_reranker_dir)))


@pytest.fixture(scope="module")
def engine(tmp_path_factory, model):
    settings = Settings.from_env({}).with_overrides(data_dir=tmp_path_factory.mktemp("rr"))
    reranker = CachingReranker(model, LruScoreStore(10_000), ttl_s=60)
    eng = SearchEngine(settings, reranker=reranker)
    assert not eng.index(sample_docs()).failed
    yield eng
    eng.close()


def test_top_window_is_ordered_by_the_cross_encoder(engine):
    result = engine.search(SearchRequest(query=QUERY, top_k=20, rerank_depth=10))
    assert result.reranked and result.rerank_window == 10 and not result.degraded
    head = result.hits[:10]
    logits = [h.rerank_logit for h in head]
    assert None not in logits and logits == sorted(logits, reverse=True)
    assert all(h.rerank_logit is None for h in result.hits[10:])
    # The tail keeps fused order and every hit remembers its fused rank.
    tail = [h.fused.rank for h in result.hits[10:]]
    assert tail == sorted(tail) and min(tail) > 10
    assert {"rerank", "rerank_cache"} <= set(result.timings_ms)


def test_second_identical_query_does_no_model_work(engine, model):
    engine.search(SearchRequest(query="winter garden hose", top_k=5))
    before = model.passages
    again = engine.search(SearchRequest(query="winter garden hose", top_k=5))
    assert model.passages == before
    assert again.cached_scores == again.rerank_window > 0
    assert "rerank_model" not in again.timings_ms


def test_rerank_off_per_query_keeps_fused_order(engine):
    off = engine.search(SearchRequest(query=QUERY, top_k=10, rerank=False))
    assert not off.reranked and off.rerank_window == 0
    assert [h.fused.rank for h in off.hits] == list(range(1, len(off.hits) + 1))


def test_edited_document_misses_the_cache(engine, model):
    query = "patch a punctured inner tube"
    engine.search(SearchRequest(query=query, top_k=5, rerank_depth=5))
    first = engine.search(SearchRequest(query=query, top_k=5, rerank_depth=5))
    assert first.cached_scores == 5
    target = first.hits[0].doc_id
    doc = next(d for d in sample_docs() if d.id == target)
    engine.index([dataclasses.replace(doc, text=doc.text + " Carry tyre levers.")])
    before = model.passages
    after = engine.search(SearchRequest(query=query, top_k=5, rerank_depth=5))
    assert after.cached_scores == 4 and model.passages == before + 1


def test_model_revision_change_misses(tiny_reranker_dir):
    store = LruScoreStore(100)
    v1 = CachingReranker(CrossEncoderReranker(str(tiny_reranker_dir), revision="v1"), store, 60)
    v2 = CachingReranker(CrossEncoderReranker(str(tiny_reranker_dir), revision="v2"), store, 60)
    assert v1.rerank("q", ["a passage"]).cached == 0
    assert v1.rerank("q", ["a passage"]).cached == 1
    assert v2.rerank("q", ["a passage"]).cached == 0


def test_missing_model_degrades_to_fused_order(engine, tmp_path):
    settings = engine.settings.with_overrides(
        rerank_backend="local", rerank_model="no-such/model", rerank_models_dir=tmp_path
    )
    missing = build_reranker(settings)
    assert missing is not None
    col = engine.collection()
    pipeline = Pipeline(settings, col.keyword, col.vector, engine.embedder, reranker=missing)
    result = pipeline.search(SearchRequest(query=QUERY, top_k=10))
    plain = engine.search(SearchRequest(query=QUERY, top_k=10, rerank=False))
    assert result.degraded == ["rerank"] and not result.reranked
    assert "no-such/model" in result.degraded_reasons["rerank"]
    assert [h.doc_id for h in result.hits] == [h.doc_id for h in plain.hits]


def test_auto_backend_is_off_when_no_model_is_found(tmp_path):
    settings = Settings.from_env({}).with_overrides(
        data_dir=tmp_path, rerank_models_dir=tmp_path / "models", rerank_model="absent/model"
    )
    assert build_reranker(settings) is None


def test_redis_stopped_mid_run_search_still_answers(engine, model, redis_server):
    store = RedisScoreStore(redis_server.url, timeout_s=0.2)
    col = engine.collection()
    pipeline = Pipeline(
        engine.settings,
        col.keyword,
        col.vector,
        engine.embedder,
        reranker=CachingReranker(model, store, 60),
    )
    warm = pipeline.search(SearchRequest(query="lightning storm safety", top_k=5))
    assert pipeline.search(SearchRequest(query="lightning storm safety", top_k=5)).cached_scores
    redis_server.stop()
    try:
        result = pipeline.search(SearchRequest(query="lightning storm safety", top_k=5))
        assert result.reranked and not result.degraded and result.cached_scores == 0
        assert [h.doc_id for h in result.hits] == [h.doc_id for h in warm.hits]
        assert store.stats()["errors"] > 0
    finally:
        redis_server.start()
