"""The Flask application factory.

``create_app(config, engine)`` reads every layer's settings once (unless given a
``ServiceSettings``) and wires the pieces in the order requests meet them:
metrics (time everything), CORS (answer preflights before anything asks for
credentials), rate limiting, authentication, then the blueprints.
Errors of every kind are turned into JSON in ``api.errors``.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, request

from api import auth
from api.auth import KeyRing
from api.errors import register_error_handlers
from api.factory import celery_app, make_engine, uses_celery
from api.jobs import JobQueue, ThreadJobQueue
from api.metrics import Metrics
from api.paging import CursorSigner
from api.ratelimit import install_rate_limit
from api.routes import admin, ops, search
from api.settings import ServiceSettings
from api.state import EXTENSION, Services
from search.engine import SearchEngine

log = logging.getLogger(__name__)

CORS_HEADERS = "Authorization, Content-Type, X-API-Key"
CORS_EXPOSE = "Location, Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset"


def create_app(
    config: ServiceSettings | None = None, engine: SearchEngine | None = None
) -> Flask:
    """A configured app; the engine is built from ``config`` when not given.

    With a Celery backend the app's one Celery app is built here and handed to
    the rerank client and the job queue.
    """
    config = ServiceSettings.from_env() if config is None else config
    settings, api = config.engine, config.api
    celery = celery_app(config) if uses_celery(config) else None
    if engine is None:
        engine = make_engine(config, celery)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = api.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the documented field order

    keys = KeyRing(api.api_keys)
    jobs: JobQueue
    if api.index_backend == "celery":
        from api.jobs_celery import CeleryJobQueue
        from workers.index_client import IndexClient

        assert celery is not None  # uses_celery(config)
        jobs = CeleryJobQueue(engine, IndexClient(celery, config.workers))
    else:
        jobs = ThreadJobQueue(engine)
    metrics = Metrics(lambda: _cache_stats(engine), jobs.depth)
    app.extensions[EXTENSION] = Services(
        settings, api, engine, keys, jobs, metrics, CursorSigner(api.cursor_secret)
    )

    metrics.install(app)
    _install_cors(app, api.cors_origins)
    if api.rate_limit:
        install_rate_limit(app, api.rate_limit, settings.cache_url, keys, metrics)
    auth.install(app, keys)
    register_error_handlers(app)
    for blueprint in (search.bp, admin.bp, ops.bp):
        app.register_blueprint(blueprint)
    if keys.open:
        log.warning("no SIEVE_API_KEYS: the API is open to anyone who can reach it")
    return app


def _cache_stats(engine: SearchEngine) -> dict[str, int]:
    store = getattr(engine.reranker, "store", None)
    stats = getattr(store, "stats", None)
    return stats() if callable(stats) else {}


def _install_cors(app: Flask, origins: tuple[str, ...]) -> None:
    """CORS headers for the listed origins only; nothing at all when none are listed."""
    if not origins:
        return
    allowed = set(origins)

    def allowed_origin() -> str | None:
        origin = request.headers.get("Origin")
        if origin and ("*" in allowed or origin in allowed):
            return origin
        return None

    @app.before_request
    def _preflight() -> Response | None:
        origin = allowed_origin()
        if request.method != "OPTIONS" or origin is None or request.endpoint is None:
            return None
        if "Access-Control-Request-Method" not in request.headers:
            return None
        response = Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
        return response

    @app.after_request
    def _headers(response: Response) -> Response:
        origin = allowed_origin()
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE
        response.vary.add("Origin")
        return response
