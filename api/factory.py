"""Builds what an edge (command line, HTTP app) runs on from its ``ServiceSettings``.

The engine never imports Celery; when reranking or indexing runs on Celery
workers, the edge builds the process's one Celery app (``workers.app.celery_init_app``)
and this module hands it to the clients that send with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from api.settings import ServiceSettings
from search.engine import SearchEngine, build_reranker
from search.rerank import Reranker

if TYPE_CHECKING:
    from celery import Celery


def uses_celery(config: ServiceSettings) -> bool:
    """Whether reranking or the API's indexing jobs go to Celery workers."""
    return config.engine.rerank_backend == "celery" or config.api.index_backend == "celery"


def celery_app(config: ServiceSettings) -> Celery:
    """The Celery app for ``config`` (imported late: the embedded mode needs no Celery)."""
    from workers.app import celery_init_app

    return celery_init_app(config.engine, config.workers)


def remote_reranker(config: ServiceSettings, app: Celery | None) -> Reranker | None:
    """The Celery reranker client (sending with ``app``) when ``SIEVE_RERANK_BACKEND=celery``."""
    if config.engine.rerank_backend != "celery":
        return None
    from workers.client import CeleryReranker

    return CeleryReranker(app or celery_app(config), config.engine, config.workers)


def make_engine(config: ServiceSettings, app: Celery | None = None) -> SearchEngine:
    """A ``SearchEngine`` with the configured reranker (in-process, Celery or none)."""
    settings = config.engine
    remote = remote_reranker(config, app)
    return SearchEngine(settings, reranker=build_reranker(settings, remote))
