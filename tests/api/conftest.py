"""Fixtures of the HTTP API tests: real engines (tantivy, Qdrant Edge, MiniLM) and the
tiny cross-encoder, the sample corpus indexed once per session, Flask's test client.

Tests that write use their own collection names, so the indexed sample corpus in
``default`` stays the same for every search test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from api_testkit import SAMPLE, app_config, engine_settings
from flask import Flask
from flask.testing import FlaskClient

from api.app import create_app
from search.engine import SearchEngine
from search.ingest import iter_paths
from search.rerank import CachingReranker, CrossEncoderReranker
from search.scores import LruScoreStore
from search.types import Document


@pytest.fixture(scope="session")
def reranker(tiny_reranker_dir: Path) -> CachingReranker:
    inner = CrossEncoderReranker(str(tiny_reranker_dir), models_dir=tiny_reranker_dir.parent)
    return CachingReranker(inner, LruScoreStore(10_000), ttl_s=3600)


@pytest.fixture(scope="session")
def sample_docs() -> list[Document]:
    paths = [SAMPLE / "corpus.jsonl", SAMPLE / "docs"]
    return [d for d in iter_paths(paths) if isinstance(d, Document)]


@pytest.fixture(scope="session")
def engine(tmp_path_factory, reranker, sample_docs) -> Iterator[SearchEngine]:
    """The sample corpus in ``default``, searched with the tiny reranker."""
    settings = engine_settings(tmp_path_factory.mktemp("api-engine"))
    eng = SearchEngine(settings, reranker=reranker)
    report = eng.index(sample_docs)
    assert report.indexed == len(sample_docs) and not report.failed
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def app(engine) -> Flask:
    return create_app(app_config(engine.settings), engine)


@pytest.fixture
def client(app) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_app(engine) -> Callable[..., Flask]:
    """Another app over the same engine, with some settings changed."""

    def build(**changes: Any) -> Flask:
        return create_app(app_config(engine.settings, **changes), engine)

    return build


@pytest.fixture
def collection(client) -> Iterator[str]:
    """A fresh, empty collection, dropped afterwards."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    assert client.post("/v1/collections", json={"name": name}).status_code == 201
    yield name
    client.delete(f"/v1/collections/{name}")
