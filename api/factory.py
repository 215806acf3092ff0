"""Builds the engine for an edge (command line, HTTP app) from ``Settings``.

The engine never imports Celery; when reranking runs on Celery workers, this
is where the Celery client is made and handed to it.
"""

from __future__ import annotations

from search.config import Settings
from search.engine import SearchEngine, build_reranker
from search.rerank import Reranker


def remote_reranker(settings: Settings) -> Reranker | None:
    """The Celery reranker client when ``SIEVE_RERANK_BACKEND=celery``, else None."""
    if settings.rerank_backend != "celery":
        return None
    from workers.client import CeleryReranker

    return CeleryReranker(settings)


def make_engine(settings: Settings) -> SearchEngine:
    """A ``SearchEngine`` with the configured reranker (in-process, Celery or none)."""
    return SearchEngine(settings, reranker=build_reranker(settings, remote_reranker(settings)))
