"""Admin uploads through the API on Celery index workers (SIEVE_INDEX_BACKEND=celery).

Real Redis broker, a real index worker process, the real Flask app. The API
records documents in the registry (the outbox) and enqueues their ids; the
worker writes both indexes; ``GET /v1/tasks/{id}`` follows the Celery task.
The embedded vector engine admits one process, so the API reads the indexes
only after the worker has stopped.
"""

from __future__ import annotations

import io
import json
import time
import uuid

import pytest

from api.app import create_app
from api.settings import ServiceSettings
from search.engine import SearchEngine
from search.types import SearchRequest

pytestmark = pytest.mark.integration

DB = 13  # this module's own Redis database


@pytest.fixture(scope="module")
def setup(celery_worker, redis_server, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("api-celery")
    queue = f"index-{uuid.uuid4().hex[:8]}"
    env = {
        "SIEVE_DATA_DIR": str(data_dir),
        "SIEVE_INDEX_QUEUE": queue,
        "SIEVE_RERANK_QUEUE": "rerank-unused",
        "SIEVE_RERANK_BACKEND": "none",
        "SIEVE_EMBED_DEVICE": "cpu",
    }
    worker = celery_worker(db=DB, queue=queue, env=env)
    worker.wait_for_log(r"@\S+ ready\.", timeout_s=120)
    config = ServiceSettings.from_env({}).with_overrides(
        data_dir=data_dir,
        broker_url=worker.workers.broker_url,
        index_queue=queue,
        index_backend="celery",
        rerank_backend="none",
        rate_limit="",
    )
    engine = SearchEngine(config.engine, reranker=None)
    app = create_app(config, engine)
    yield worker, engine, app.test_client()
    engine.close()


def wait(client, task_id: str, timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task = client.get(f"/v1/tasks/{task_id}").get_json()
        if task["state"] in ("done", "failed"):
            return task
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} did not finish: {task}")


def test_uploads_are_staged_then_indexed_by_the_worker(setup):
    worker, engine, client = setup
    docs = [
        {"id": f"cj-{i}", "title": f"Quokka note {i}", "text": f"quokka habitat note {i}"}
        for i in range(5)
    ]
    answer = client.post("/v1/collections/default/documents", json={"documents": docs})
    assert answer.status_code == 202
    task_id = answer.get_json()["task_id"]
    # The outbox: every document is in the registry before any worker has run it.
    assert set(engine.registry.versions("default")) >= {d["id"] for d in docs}
    task = wait(client, task_id)
    assert task["state"] == "done" and task["indexed"] == 5 and task["failed"] == {}

    lines = b'{"_id": "cj-up", "text": "wombat burrow facts"}\n{broken\n'
    upload = client.post(
        "/v1/collections/default/documents:upload",
        data={"file": (io.BytesIO(lines), "more.jsonl")},
        content_type="multipart/form-data",
    )
    assert upload.status_code == 202
    task = wait(client, upload.get_json()["task_id"])
    assert task["state"] == "done" and task["indexed"] == 1
    assert any("more.jsonl:2" in e for e in task["errors"])

    again = client.post("/v1/collections/default/documents", json={"documents": docs})
    task = wait(client, again.get_json()["task_id"])
    assert task["unchanged"] == 5 and task["indexed"] == 0
    assert client.get("/v1/tasks/not-a-task").status_code == 404

    worker.stop()
    rows = {
        d: engine.registry.get("default", d).status for d in engine.registry.versions("default")
    }
    assert set(rows.values()) == {"indexed"}, json.dumps(rows)
    hits = engine.search(SearchRequest(query="wombat burrow", mode="bm25")).hits
    assert hits and hits[0].doc_id == "cj-up"
    assert engine.stats()["vector_chunks"] == 6
