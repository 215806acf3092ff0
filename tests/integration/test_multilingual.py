"""A multilingual embedder serves Chinese queries; an English one skips them and says why.

Real engines (tantivy, Qdrant Edge) and real models: a tiny random XLM-R encoder
built locally (``tests/support/tiny_models.py``) named by ``SIEVE_EMBED_MODEL``,
as bge-m3 or multilingual-e5 would be, and the bundled English MiniLM.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api.app import create_app
from api.settings import ApiSettings, ServiceSettings
from search.config import Settings
from search.embed import TransformerEmbedder
from search.engine import SearchEngine
from search.pipeline import Pipeline
from search.types import Document, SearchRequest

pytestmark = pytest.mark.integration

QUERY = "茶叶怎么保存才不会受潮？"
DOCS = [
    Document(id="zh-tea", text="茶叶要密封保存，放在阴凉干燥的地方，远离潮湿和异味。"),
    Document(id="zh-rice", text="电饭锅煮饭前先把米洗干净，水和米的比例大约是一比一。"),
    Document(id="zh-bike", text="自行车刹车不灵时，先检查刹车线和刹车片的磨损。"),
    Document(id="en-tea", text="Store tea leaves in an airtight tin, away from heat and light."),
    Document(id="en-router", text="Restart the router and wait two minutes before testing."),
    Document(id="en-garden", text="Compost and mulch keep garden soil warm and moist."),
]


def open_engine(data_dir: Path, env: dict[str, str]) -> SearchEngine:
    """An engine read from ``SIEVE_*`` variables as the service reads them, DOCS indexed."""
    settings = Settings.from_env({"SIEVE_DATA_DIR": str(data_dir), **env})
    engine = SearchEngine(settings, reranker=None)
    report = engine.index(DOCS)
    assert report.indexed == len(DOCS) and not report.failed
    return engine


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory, tiny_encoder_dir: Path) -> Iterator[SearchEngine]:
    data_dir = tmp_path_factory.mktemp("multilingual")
    engine = open_engine(data_dir, {"SIEVE_EMBED_MODEL": str(tiny_encoder_dir)})
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def english(tmp_path_factory) -> Iterator[SearchEngine]:
    engine = open_engine(tmp_path_factory.mktemp("english"), {})
    yield engine
    engine.close()


def test_a_chinese_query_runs_the_vector_leg_of_a_multilingual_embedder(multilingual):
    # No SIEVE_EMBED_LANGUAGES: the folder's XLM-R architecture tells.
    assert multilingual.settings.embed_languages == ()
    assert multilingual.stats()["embed_languages"] == ["*"]
    config = ServiceSettings(engine=multilingual.settings, api=ApiSettings(rate_limit=""))
    client = create_app(config, multilingual).test_client()
    response = client.post("/v1/search", json={"query": QUERY, "top_k": 6})
    assert response.status_code == 200, response.json
    body = response.json
    assert body["skipped"] == {} and body["degraded"] == []
    assert {"embed", "vector", "bm25", "fusion"} <= set(body["timings_ms"])
    # The normal hybrid fusion, with the configured weights.
    assert body["fusion"] == multilingual.settings.fusion == "bounded"
    assert body["fusion_weights"] == list(multilingual.settings.fusion_weights)
    assert all(hit["vector"] is not None and hit["fused"] for hit in body["hits"])
    assert body["hits"][0]["bm25"] is not None  # BM25 still finds the tea document
    # Weights asked for are the ones applied.
    asked = client.post("/v1/search", json={"query": QUERY, "weights": [0.5, 2.0]}).json
    assert asked["fusion_weights"] == [0.5, 2.0]


def test_the_setting_overrides_what_the_folder_tells(multilingual, tiny_encoder_dir: Path):
    col = multilingual.collection()
    pinned = TransformerEmbedder(str(tiny_encoder_dir), languages=("en",))
    pipeline = Pipeline(multilingual.settings, col.keyword, col.vector, pinned)
    result = pipeline.search(SearchRequest(query=QUERY))
    assert "set by SIEVE_EMBED_LANGUAGES" in result.skipped["vector"]
    assert result.fusion is None and result.fusion_weights is None


def test_an_english_embedder_skips_the_same_query_and_says_why(english):
    result = english.search(SearchRequest(query=QUERY, top_k=6))
    reason = result.skipped["vector"]
    assert "all-MiniLM-L6-v2" in reason and "cjk" in reason and "languages: en" in reason
    assert "SIEVE_EMBED_LANGUAGES" in reason  # what to do about it
    assert not result.degraded and result.hits and result.hits[0].doc_id == "zh-tea"
    assert result.fusion is None and result.fusion_weights is None
    assert all(h.vector is None for h in result.hits) and "vector" not in result.timings_ms
    # English queries keep both legs.
    both = english.search(SearchRequest(query="how to store tea leaves"))
    assert not both.skipped and both.fusion_weights == english.settings.fusion_weights
