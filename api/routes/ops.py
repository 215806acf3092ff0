"""Operations endpoints (public): health, readiness, metrics, OpenAPI, docs, pages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, send_from_directory

from api.auth import public
from api.docs_page import ASSETS, SWAGGER_DIST
from api.errors import ApiError, set_retry_after
from api.openapi import build_openapi
from api.state import services
from search.engine import SearchEngine
from search.errors import RegistryError
from search.keyword import KeywordIndex
from search.rerank.status import cuda_present, describe
from search.vector import VectorIndex

bp = Blueprint("ops", __name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# Backends whose failure leaves nothing to answer with; the reranker and the
# cache only degrade results (fused order, recomputed scores), so they are
# reported but do not make the service unready.
REQUIRED = ("registry", "keyword", "vector")


def _probe(check: Callable[[], str]) -> str:
    try:
        result = check()
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure, it never raises
        # Long enough for a registry mismatch, which names both ids and the data dir.
        return f"error: {type(exc).__name__}: {exc}"[:800]
    return result


def _cache_state(engine: SearchEngine) -> str:
    if engine.reranker is None:
        return "absent"
    url = engine.settings.cache_url
    if not url:
        return "lru"
    import redis

    client = redis.Redis.from_url(
        url,
        socket_timeout=engine.settings.cache_timeout_s,
        socket_connect_timeout=engine.settings.cache_timeout_s,
    )
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def _reranker_state(engine: SearchEngine) -> str:
    reranker = engine.reranker
    if reranker is None:
        return "absent"
    # CachingReranker wraps the model; ask the model itself whether it can load.
    available = getattr(getattr(reranker, "inner", reranker), "available", None)
    if callable(available) and not available():
        return "error: model not found"
    return "ok"


def _probe_status(engine: SearchEngine) -> dict[str, object]:
    return describe(engine.settings, engine.reranker, cuda=cuda_present()).to_json()


def readiness(engine: SearchEngine) -> dict[str, str]:
    """Each backend's state: "ok", or why not."""

    def count(index: KeywordIndex | VectorIndex) -> str:
        index.count()
        return "ok"

    def registry() -> str:
        engine.registry.ping()
        try:
            # Opening the collection checks its indexes against the registry.
            engine.collection()
        except RegistryError:
            raise
        except Exception:  # noqa: BLE001 - an index's own failure is that index's probe's to report
            return "ok"
        return "ok"

    return {
        "registry": _probe(registry),
        "keyword": _probe(lambda: count(engine.collection().keyword)),
        "vector": _probe(lambda: count(engine.collection().vector)),
        "reranker": _probe(lambda: _reranker_state(engine)),
        "cache": _probe(lambda: _cache_state(engine)),
    }


@bp.get("/healthz")
@public
def healthz() -> Response:
    """200 while the process runs."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@public
def readyz() -> Response:
    """200 when the registry and both indexes answer and the warm-up is done, else 503
    with the first reason ("warming: loading embedder, reranker" while it runs)."""
    engine = services().engine
    # Read before the probes: a part that finishes meanwhile must not be reported
    # "ok" in ``warm_up`` while the reason still says it is loading, or the reverse.
    warming = engine.warmup.warming()
    warm_state = engine.warmup.state()
    backends = readiness(engine)
    failing = [name for name in REQUIRED if backends[name] != "ok"]
    body: dict[str, object] = {"ready": not failing and not warming, "backends": backends}
    # Each part's load: "ok", "loading", "lazy" (no warm-up ran) or "error: ...". A
    # part that failed is reported here and in the log, and does not hold readiness
    # (the embedder's failure shows in the vector probe; the reranker's degrades).
    body["warm_up"] = warm_state
    # What reranks, or why nothing does and the fix: the search page shows it. A
    # missing reranker only degrades results, so it never makes the service unready.
    body["reranker_status"] = _probe_status(services().engine)
    if failing:
        body["reason"] = f"{failing[0]}: {backends[failing[0]]}"
    elif warming:
        body["reason"] = f"warming: loading {', '.join(warming)}"
    response = jsonify(body)
    response.status_code = 503 if failing or warming else 200
    if warming and not failing:
        set_retry_after(response, 1)  # curable by waiting: a load takes seconds
    return response


@bp.get("/metrics")
@public
def metrics() -> Response:
    """Prometheus text exposition."""
    return services().metrics.render()


@bp.get("/openapi.json")
@public
def openapi() -> Response:
    """The OpenAPI 3.1 document, built once per app."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    document = app.extensions.get("sieve_openapi")
    if document is None:
        document = app.extensions["sieve_openapi"] = build_openapi()
    return jsonify(document)


@bp.get("/docs")
@public
def docs() -> Response:
    """Swagger UI over /openapi.json, with a try-it-out console (no CDN)."""
    return _page("docs.html")


@bp.get("/docs/assets/<name>")
@public
def docs_asset(name: str) -> Response:
    """One of Swagger UI's files (``api.docs_page.ASSETS``), from its package."""
    if name not in ASSETS:
        raise ApiError(404, f"no such documentation asset: {name}")
    return send_from_directory(SWAGGER_DIST, name, max_age=3600)


def _page(name: str) -> Response:
    if not (STATIC_DIR / name).is_file():
        raise ApiError(404, f"page {name} is not installed")
    return send_from_directory(STATIC_DIR, name)


@bp.get("/")
@public
def search_page() -> Response:
    """The search page (``api/static/index.html``)."""
    return _page("index.html")


@bp.get("/admin")
@public
def admin_page() -> Response:
    """The admin page (``api/static/admin.html``)."""
    return _page("admin.html")
