"""The real Sieve app on a localhost port, for tests that drive it over HTTP (a browser).

One server per session: werkzeug's ``make_server`` in a daemon thread (threaded,
so the page's parallel requests and the indexing thread do not wait on each
other), over a ``SearchEngine`` on a temporary data directory with the sample
corpus indexed in ``default`` and the tiny cross-encoder behind the pair-score
cache, so that searches are reranked and the compare view has two orders.
Tests that write use their own collection names or distinctive document ids.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from flask import Flask

    from search.engine import SearchEngine

SAMPLE_CORPUS = Path(__file__).resolve().parents[2] / "sample" / "corpus.jsonl"


@dataclass(frozen=True)
class LiveServer:
    """Where the app listens, and the engine behind it (for checks from the test side)."""

    url: str
    engine: SearchEngine


@pytest.fixture(scope="session")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_reranker_dir: Path
) -> Iterator[LiveServer]:
    """The app on ``http://127.0.0.1:<free port>`` with the sample corpus, reranked."""
    # Imported here: conftest loads this module for every run, and most need no app.
    from api.app import create_app
    from api.settings import ApiSettings, ServiceSettings
    from api.state import EXTENSION
    from search.config import Settings
    from search.engine import SearchEngine
    from search.ingest import iter_paths
    from search.rerank import CachingReranker, CrossEncoderReranker
    from search.scores import LruScoreStore
    from search.types import Document

    settings = Settings.from_env({}).with_overrides(data_dir=tmp_path_factory.mktemp("live-server"))
    inner = CrossEncoderReranker(str(tiny_reranker_dir), models_dir=tiny_reranker_dir.parent)
    engine = SearchEngine(settings, reranker=CachingReranker(inner, LruScoreStore(10_000), 60))
    docs = [d for d in iter_paths([SAMPLE_CORPUS]) if isinstance(d, Document)]
    report = engine.index(docs)
    assert report.indexed == len(docs) and not report.failed, report

    app = create_app(ServiceSettings(engine=settings, api=ApiSettings(rate_limit="")), engine)
    try:
        with serve(app) as url:
            yield LiveServer(url, engine)
    finally:
        app.extensions[EXTENSION].jobs.close()
        engine.close()


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    """Serve ``app`` on a free localhost port in a daemon thread; yields its base URL."""
    from werkzeug.serving import make_server

    # Port 0: the OS picks a free port, so parallel runs never collide.
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
