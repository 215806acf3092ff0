"""Health, readiness, metrics, OpenAPI, docs, CORS, rate limits, errors and `sieve serve`."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import time

import pytest
import schemathesis
from api_testkit import DEAD_URL, app_config, engine_settings, error_code
from support.live_server import sieve_serve
from support.redis_server import RedisServer

from api.app import create_app
from api.cli.serve import serve_plan
from api.errors import RETRY_AFTER_S
from api.settings import ApiSettings, ServiceSettings
from search.engine import SearchEngine
from search.errors import BackendUnavailable, ModelNotFound

pytestmark = [
    pytest.mark.integration,
    # qdrant-client warns when the (deliberately dead) server cannot say its version.
    pytest.mark.filterwarnings("ignore:Failed to obtain server version:UserWarning"),
]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json
    status = body.pop("reranker_status")
    # No warm-up ran in this app (only `sieve serve` starts one): each part loads on
    # first use, or has been by an earlier query.
    warm_up = body.pop("warm_up")
    assert set(warm_up) == {"chinese dictionary", "embedder", "reranker"}
    assert set(warm_up.values()) <= {"lazy", "ok"}
    assert body == {
        "ready": True,
        "backends": {
            "registry": "ok",
            "keyword": "ok",
            "vector": "ok",
            "reranker": "ok",
            "cache": "lru",
        },
    }
    assert status["active"] and status["reason"] == "" and len(status["fingerprint"]) == 12
    assert status["model"].endswith("tiny-reranker") and status["device"] in ("cpu", "cuda")
    assert status["calibrated"] is False and status["blend_source"] == "default"


def test_readyz_without_a_reranker_is_ready_and_says_why_and_the_fix(engine, tmp_path):
    settings = engine_settings(tmp_path, rerank_models_dir=tmp_path / "models")
    bare = SearchEngine(settings, embedder=engine.embedder, reranker=None)
    try:
        response = create_app(app_config(settings), bare).test_client().get("/readyz")
    finally:
        bare.close()
    assert response.status_code == 200 and response.json["ready"] is True
    status = response.json["reranker_status"]
    assert not status["active"] and status["reason"] == "missing"
    assert str(tmp_path / "models") in status["why"]
    assert status["fix"].startswith("sieve models pull ")


@pytest.fixture(scope="module")
def dead_vector_app(engine, tmp_path_factory):
    """An app whose vector backend is a Qdrant server that is not there, and no reranker."""
    settings = engine_settings(
        tmp_path_factory.mktemp("dead"),
        vector_backend="qdrant",
        qdrant_url=DEAD_URL,
        qdrant_timeout_s=1.0,
    )
    dead = SearchEngine(settings, embedder=engine.embedder, reranker=None)
    yield create_app(app_config(settings), dead)
    dead.close()


def test_readyz_is_503_when_a_backend_is_down(dead_vector_app):
    response = dead_vector_app.test_client().get("/readyz")
    assert response.status_code == 503
    body = response.json
    assert body["ready"] is False and body["backends"]["vector"].startswith("error")
    assert body["backends"]["keyword"] == "ok" and body["backends"]["reranker"] == "absent"


def test_a_down_vector_leg_degrades_and_is_counted(dead_vector_app):
    client = dead_vector_app.test_client()
    response = client.post("/v1/search", json={"query": "storm safety", "mode": "hybrid"})
    assert response.status_code == 200 and response.json["degraded"] == ["vector"]
    assert set(response.json["degraded_reasons"]) == {"vector"}
    assert 'sieve_degraded_total{stage="vector"} 1.0' in client.get("/metrics").text
    context = client.post("/v1/context", json={"query": "storm safety"}).json
    assert context["degraded"] == ["vector"] and context["reranked"] is False
    assert context["degraded_reasons"]["vector"]  # every degraded stage says why
    only_vector = client.post("/v1/search", json={"query": "storm", "mode": "vector"})
    assert only_vector.status_code == 503 and error_code(only_vector) == "backend_unavailable"


def test_rerank_without_a_reranker_is_503(dead_vector_app):
    response = dead_vector_app.test_client().post(
        "/v1/rerank", json={"query": "q", "documents": ["a"]}
    )
    assert response.status_code == 503 and error_code(response) == "backend_unavailable"
    message = response.json["error"]["message"]
    assert message.startswith("no reranker: ") and "; fix: " in message  # the status's words
    assert "Retry-After" not in response.headers  # retrying cannot help until it is fixed


def test_metrics_name_every_series(make_app):
    client = make_app().test_client()
    client.post("/v1/search", json={"query": "how to stop a nosebleed"})
    client.post("/v1/search", json={"query": "how to stop a nosebleed"})  # cached rerank scores
    client.get("/healthz")
    text = client.get("/metrics").text
    for name in (
        'sieve_requests_total{endpoint="/v1/search",method="POST",status="200"} 2.0',
        'sieve_request_seconds_bucket{endpoint="/v1/search"',
        'sieve_stage_seconds_bucket{le="0.005",stage="bm25"}',
        'sieve_stage_seconds_count{stage="rerank"}',
        "sieve_cache_hits_total",
        "sieve_cache_misses_total",
        'sieve_degraded_total{stage="rerank"} 0.0',
        'sieve_queue_depth{queue="index"} 0.0',
    ):
        assert name in text, name
    hits = float(re.search(r"^sieve_cache_hits_total (\S+)$", text, re.M).group(1))
    assert hits > 0


def test_openapi_documents_exactly_the_routes(app, client):
    doc = client.get("/openapi.json").json
    assert doc["openapi"] == "3.1.0"
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        served |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == served
    search = doc["paths"]["/v1/search"]["post"]
    ref = search["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.split("/")[-1]]
    assert schema["additionalProperties"] is False and schema["properties"]["top_k"]["maximum"]
    # Against the OpenAPI 3.1 meta-schema (a broken document raises).
    loaded = schemathesis.openapi.from_dict(doc)
    loaded.validate()
    assert list(loaded.iter_schema_warnings()) == []


def test_unknown_routes_and_methods_answer_json(client):
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404 and error_code(missing) == "not_found"
    wrong = client.get("/v1/search")
    assert wrong.status_code == 405 and error_code(wrong) == "invalid_request"
    assert "POST" in wrong.headers["Allow"]


def test_cors_is_off_by_default_and_on_for_listed_origins(client, make_app):
    origin = {"Origin": "https://app.example"}
    assert "Access-Control-Allow-Origin" not in client.get("/healthz", headers=origin).headers
    listed = make_app(cors_origins=("https://app.example",), api_keys="k:admin").test_client()
    response = listed.get("/healthz", headers=origin)
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Origin" in response.headers["Vary"]
    other = listed.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = listed.options(
        "/v1/search",
        headers={**origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"},
    )  # fmt: skip
    assert preflight.status_code == 204  # answered before authentication
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"


def test_rate_limit_is_429_with_retry_after_per_key(make_app):
    client = make_app(rate_limit="3/minute", api_keys="one:admin,two:admin").test_client()
    one, two = {"X-API-Key": "one"}, {"X-API-Key": "two"}
    assert [client.get("/v1/collections", headers=one).status_code for _ in range(3)] == [200] * 3
    limited = client.get("/v1/collections", headers=one)
    assert limited.status_code == 429 and error_code(limited) == "rate_limited"
    assert int(limited.headers["Retry-After"]) > 0
    ok = client.get("/v1/collections", headers=two)
    assert ok.status_code == 200 and "Retry-After" not in ok.headers  # only where it helps
    assert ok.headers["X-RateLimit-Remaining"] == "2"
    assert client.get("/v1/collections", headers=two).status_code == 200  # its own bucket
    assert client.get("/healthz").status_code == 200  # probes are never limited


def test_rate_limit_is_shared_through_redis(make_app, redis_server):
    first = make_app(rate_limit="2/minute", cache_url=redis_server.url).test_client()
    second = make_app(rate_limit="2/minute", cache_url=redis_server.url).test_client()
    assert first.get("/v1/collections").status_code == 200
    assert second.get("/v1/collections").status_code == 200
    assert first.get("/v1/collections").status_code == 429  # the two "workers" share a count


def metric(client, name: str) -> float:
    """One unlabelled series of ``/metrics`` (never rate limited, outage or not)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    [value] = [
        float(line.split()[1]) for line in response.text.splitlines() if line.split()[0] == name
    ]
    return value


def test_rate_limits_stay_on_while_their_redis_is_down(make_app, caplog):
    server = RedisServer()  # its own: the session's Redis serves other tests
    try:
        server.start()
        app = make_app(rate_limit="5/minute", cache_url=server.url)
        first = app.test_client()
        second = make_app(rate_limit="5/minute", cache_url=server.url).test_client()
        assert [first.get("/v1/collections").status_code for _ in range(6)] == [200] * 5 + [429]
        assert metric(first, "sieve_rate_limit_fallback") == 0

        server.stop()
        caplog.clear()
        with caplog.at_level(logging.INFO):
            burst = [first.get("/v1/collections").status_code for _ in range(100)]

        # Counted in this process from the outage on: 5 more, then 429s.
        assert burst.count(200) == 5 and burst.count(429) == 95, burst
        assert first.get("/healthz").status_code == 200  # probes stay unlimited
        assert metric(first, "sieve_rate_limit_fallback") == 1
        assert metric(first, "sieve_rate_limit_outages_total") == 1
        # One line for the outage, not a traceback per request.
        loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert [r.getMessage() for r in loud] == [
            "Rate limit storage unreachable - falling back to in-memory storage"
        ]
        assert not any(r.exc_info for r in caplog.records)

        server.start()
        # Flask-Limiter tries the Redis again after 1, 2, 4, ... s of fallback.
        deadline = time.monotonic() + 70
        while metric(first, "sieve_rate_limit_fallback") == 1:
            assert time.monotonic() < deadline, "never went back to Redis"
            first.get("/v1/collections")
            time.sleep(0.05)

        # Back in Redis (restarted empty): the request that found it counted there,
        # and the other process's requests count in the same bucket again.
        assert [second.get("/v1/collections").status_code for _ in range(5)] == [200] * 4 + [429]
        assert metric(first, "sieve_rate_limit_outages_total") == 1
    finally:
        server.cleanup()


def test_serve_plan_binds_localhost_without_keys_and_one_embedded_worker():
    open_plan = serve_plan(ServiceSettings().with_overrides(host="0.0.0.0", workers=4))
    assert open_plan.host == "127.0.0.1" and open_plan.workers == 1
    assert any("127.0.0.1" in note for note in open_plan.notes)
    assert any("1 worker" in note for note in open_plan.notes)
    keyed = serve_plan(
        ServiceSettings().with_overrides(
            api_keys="k:admin",
            host="0.0.0.0",
            workers=3,
            keyword_backend="elasticsearch",
            es_url="http://es:9200",
            vector_backend="qdrant",
            qdrant_url="http://qdrant:6333",
        )
    )
    assert (keyed.host, keyed.workers, keyed.notes) == ("0.0.0.0", 3, ())


def test_sieve_serve_runs_gunicorn_on_localhost(tmp_path):
    env = {"SIEVE_DATA_DIR": str(tmp_path), "SIEVE_RERANK_BACKEND": "none"}
    with sieve_serve(env, "--workers", "3") as served:
        assert served.wait_for("/healthz")[0] == 200
    output = served.output
    assert "bound to 127.0.0.1" in output and "API is open" in output
    assert "running 1 worker process instead of 3" in output
    banner = [line for line in output.splitlines() if line.startswith("reranker: ")]
    assert banner == [
        "reranker: none: SIEVE_RERANK_BACKEND=none turns reranking off. "
        "Fix: set SIEVE_RERANK_BACKEND=auto"
    ]
    assert "gthread" in output


def test_sieve_serve_on_a_busy_port_fails_in_one_line_before_gunicorn(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = int(holder.getsockname()[1])
        env = {**os.environ, "SIEVE_DATA_DIR": str(tmp_path), "SIEVE_RERANK_BACKEND": "none"}
        env.pop("SIEVE_API_KEYS", None)
        proc = subprocess.run(
            [sys.executable, "-m", "api", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 2
    assert "Sieve API on" not in proc.stdout  # nothing claims to serve
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("WARNING")]
    assert lines == [
        f"error: port {port} on 127.0.0.1 is already in use: choose another with "
        "`sieve serve --port N` or SIEVE_PORT=N"
    ]


def test_pages_and_static_files_are_public(make_app):
    client = make_app(api_keys="k:admin").test_client()
    for path in ("/", "/admin", "/static/style.css"):
        response = client.get(path)
        assert response.status_code == 200, path
    assert "text/html" in client.get("/").content_type


@pytest.mark.parametrize(
    "changes",
    [
        {"api_keys": "s3cret"},
        {"api_keys": "s3cret:root"},
        {"api_keys": "s3cret:search:Bad Name"},
        {"api_keys": "s3cret:admin,s3cret:search"},
        {"rate_limit": "lots"},
        {"cors_origins": ("app.example.com",)},
        {"cors_origins": ("https://app.example.com/path",)},
        {"max_body_bytes": 0},
        {"threads": 0},
        {"port": 70000},
    ],
)
def test_bad_api_settings_fail_at_startup_with_a_reason(changes):
    from search.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        ApiSettings(**changes)
    message = str(caught.value)
    assert "SIEVE_" in message and "s3cret" not in message  # names the setting, not the key


def test_retry_after_on_a_503_only_when_a_retry_can_cure_it(dead_vector_app):
    """A missing model needs an operator: no Retry-After; a backend that is down gets one."""
    dead = dead_vector_app.extensions["sieve"].engine
    app = create_app(app_config(dead.settings, rate_limit="100/minute"), dead)

    @app.get("/test-model-missing")
    def _missing() -> None:
        try:
            raise ModelNotFound("no model here; put it in SIEVE_RERANK_MODELS_DIR")
        except ModelNotFound as exc:
            raise BackendUnavailable(str(exc), backend="rerank") from exc

    client = app.test_client()
    answer = client.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
    assert answer.status_code == 503 and "Retry-After" not in answer.headers
    assert "SIEVE_RERANK_MODELS_DIR" in answer.json["error"]["message"]
    missing = client.get("/test-model-missing")
    assert missing.status_code == 503 and "Retry-After" not in missing.headers
    down = client.post("/v1/search", json={"query": "storm", "mode": "vector"})
    assert down.status_code == 503 and down.headers["Retry-After"] == str(RETRY_AFTER_S)
