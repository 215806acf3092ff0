"""Indexing jobs for real: a Celery index worker, a Redis broker, a PostgreSQL registry.

One worker process (prefork, concurrency 1: it alone owns the tantivy and
Qdrant Edge files of its data directory) serves the module on its own queue,
in Redis database ``DB``. The test process stages documents in the registry
(the outbox), enqueues their ids, and reads the registry and, read-only, the
tantivy index while the worker runs; the Qdrant Edge shard admits one process,
so the last test stops the worker and checks both indexes document by document.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from celery import Celery
from celery.result import AsyncResult
from sqlalchemy import text
from support.celery_worker import REPO, CeleryWorker
from support.index_jobs import (
    READY,
    documents,
    keyword_chunks,
    result_of,
    stage,
    vector_chunks,
    worker_env,
)

from search.config import Settings
from search.errors import InvalidRequest
from search.keyword.tantivy_index import TantivyKeywordIndex
from search.reconcile import reconcile
from search.registry import Registry
from search.types import Document
from workers.app import celery_init_app
from workers.index_client import IndexClient
from workers.indexing import attempt_deliveries
from workers.names import INDEX_TASK, RECONCILE_TASK
from workers.settings import WorkerSettings

pytestmark = pytest.mark.integration

DB = 11  # this module's own Redis database


@pytest.fixture(scope="module")
def worker(pg_url, celery_worker, tmp_path_factory) -> CeleryWorker:
    queue = f"index-{uuid.uuid4().hex[:8]}"
    data_dir = tmp_path_factory.mktemp("index-data")
    started = celery_worker(db=DB, queue=queue, env=worker_env(data_dir, pg_url, queue))
    started.wait_for_log(READY, timeout_s=120)  # the embedder loads after the fork
    return started


@pytest.fixture(scope="module")
def app(worker) -> Celery:
    return celery_init_app(worker.settings, worker.workers)


@pytest.fixture(scope="module")
def jobs(worker, app) -> IndexClient:
    return IndexClient(app, worker.workers)


@pytest.fixture(scope="module")
def registry(pg_url) -> Iterator[Registry]:
    reg = Registry(pg_url)
    yield reg
    reg.close()


def logged_results(worker: CeleryWorker, task_id: str) -> list[dict]:
    """Every result the worker logged for ``task_id``, in order."""
    pattern = re.compile(rf"{re.escape(task_id)}\] succeeded in \S+s: (\{{.*\}})$", re.M)
    return [ast.literal_eval(found) for found in pattern.findall(worker.log())]


def registry_chunks(registry: Registry, collection: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for doc_id in registry.versions(collection):
        row = registry.get(collection, doc_id)
        assert row is not None and row.status == "indexed", (doc_id, row and row.status)
        out[doc_id] = row.chunks
    return out


def test_round_trip_stage_enqueue_index_acknowledge(worker, app, jobs, registry):
    ids = stage(registry, "trip", documents("trip", 6, titled=True))
    task_id = jobs.enqueue_index("trip", ids)

    result = result_of(app, task_id)

    assert (result["indexed"], result["skipped"], result["failed"]) == (6, 0, {})
    assert result["missing"] == [] and result["chunks"] >= 6
    for doc_id in ids:
        row = registry.get("trip", doc_id)
        assert row.status == "indexed" and row.error is None
        assert row.keyword_version == row.vector_version == row.version == 1
    data_dir = worker.settings.data_dir
    assert keyword_chunks(data_dir, "trip") == registry_chunks(registry, "trip")
    assert worker.log().count(f"{task_id}] succeeded") == 1


def test_replayed_and_duplicated_jobs_change_nothing(worker, app, jobs, registry):
    ids = stage(registry, "replay", documents("replay", 6, seed=1, titled=True))
    first_id = jobs.enqueue_index("replay", ids)
    assert result_of(app, first_id)["indexed"] == 6
    before = keyword_chunks(worker.settings.data_dir, "replay")

    # A replay of the job, two concurrent duplicates, and the same message again
    # (same task id, as a redelivery would bring it): all skip, nothing written.
    replays = [jobs.enqueue_index("replay", ids) for _ in range(3)]
    redelivered = app.send_task(
        INDEX_TASK, args=("replay", ids), queue=worker.queue, task_id=first_id
    )
    for task_id in replays:
        result = result_of(app, task_id)
        assert (result["indexed"], result["skipped"], result["failed"]) == (0, 6, {})
    # Celery keeps the first SUCCESS stored under an id; the worker's log has both.
    worker.wait_for_log(f"{redelivered.id}] succeeded", count=2, timeout_s=60)
    first, second = logged_results(worker, first_id)
    assert (first["indexed"], second["indexed"], second["skipped"]) == (6, 0, 6)
    assert attempt_deliveries(_broker(worker), first_id) == 2

    # As after a crash between the index writes and their acknowledgement: the
    # same version is written again, over the same chunk ids.
    with registry.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE documents SET vector_version = NULL, status = 'pending' "
                "WHERE collection = 'replay'"
            )
        )
    result = result_of(app, jobs.enqueue_index("replay", ids))
    assert (result["indexed"], result["skipped"]) == (6, 0)
    assert keyword_chunks(worker.settings.data_dir, "replay") == before
    assert registry_chunks(registry, "replay") == before


def test_a_version_superseded_while_its_job_runs_is_skipped(worker, app, jobs, registry):
    ids = stage(registry, "order", documents("order", 48, seed=2, titled=True))
    task_id = jobs.enqueue_index("order", ids)
    # The job read every row (version 1) when it started; once its first batch
    # is acknowledged, a new version of its last document is staged.
    deadline = time.monotonic() + 60
    while registry.stats("order")["indexed"] == 0:
        assert time.monotonic() < deadline, worker.tail()
        time.sleep(0.02)
    changed = Document(id=ids[-1], text="zeppelin hangar over the harbour", title="v2")
    (staged,) = registry.stage("order", [changed])
    assert staged.version == 2

    result = result_of(app, task_id)

    # Version 1 of that document reached its write after version 2 was staged: skipped.
    assert (result["indexed"], result["skipped"], result["failed"]) == (47, 1, {})
    row = registry.get("order", ids[-1])
    assert row.version == 2 and row.status == "pending" and row.keyword_version is None
    result = result_of(app, jobs.enqueue_index("order", [ids[-1]]))
    assert result["indexed"] == 1
    row = registry.get("order", ids[-1])
    assert row.status == "indexed" and row.keyword_version == row.vector_version == 2
    reader = TantivyKeywordIndex(worker.settings.data_dir / "collections" / "order" / "tantivy")
    try:
        assert reader.doc_versions()[ids[-1]] == 2
        assert [h.doc_id for h in reader.search(["zeppelin"], 5)] == [ids[-1]]
    finally:
        reader.close()


def test_delete_missing_ids_and_reconcile(worker, app, jobs, registry):
    ids = stage(registry, "gone", documents("gone", 4, seed=3, titled=True))
    assert result_of(app, jobs.enqueue_index("gone", ids))["indexed"] == 4

    deleted = result_of(app, jobs.enqueue_delete("gone", ids[:2] + ["never"]))

    assert deleted == {"deleted": ids[:2]}
    assert sorted(registry.versions("gone")) == ids[2:]
    result = result_of(app, jobs.enqueue_index("gone", ids))
    assert result["missing"] == ids[:2] and result["skipped"] == 4 and result["indexed"] == 0
    report = result_of(app, app.send_task(RECONCILE_TASK, queue=worker.queue).id)
    assert set(report["collections"]) >= {"gone", "trip", "replay", "order"}
    assert all(r["total"] == 0 for r in report["collections"].values()), report


def test_invalid_jobs_are_refused(worker, app, jobs):
    with pytest.raises(InvalidRequest):
        jobs.enqueue_index("trip", [])
    with pytest.raises(InvalidRequest):
        jobs.enqueue_index("Not A Name", ["x"])
    # A malformed message (not from IndexClient) fails without a retry.
    bad = app.send_task(INDEX_TASK, args=("trip", "not-a-list"), queue=worker.queue)
    error = AsyncResult(bad.id, app=app).get(timeout=30, propagate=False)
    assert "list of document ids" in str(error)
    assert AsyncResult(bad.id, app=app).state == "FAILURE"


def test_beat_sends_the_periodic_reconcile_to_the_index_queue(worker, tmp_path):
    env = {**worker.env, "SIEVE_RECONCILE_INTERVAL_S": "1"}
    beat_app = celery_init_app(Settings.from_env(env), WorkerSettings.from_env(env))
    assert beat_app.conf.beat_schedule["sieve-reconcile"] == {
        "task": RECONCILE_TASK,
        "schedule": 1.0,
        "options": {"queue": worker.queue, "expires": 1.0},
    }
    before = worker.log().count("Task sieve.reconcile[")
    log_path = tmp_path / "beat.log"
    with open(log_path, "wb") as log:
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "beat", "--loglevel", "INFO",
             "--schedule", str(tmp_path / "beat-schedule"), "--max-interval", "1"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        pattern = re.compile(r"Task sieve\.reconcile\[\S+\] succeeded")
        deadline = time.monotonic() + 60
        while len(pattern.findall(worker.log())) <= before:
            alive = beat.poll() is None and time.monotonic() < deadline
            assert alive, f"{log_path.read_text()[-2000:]}\n{worker.tail()}"
            time.sleep(0.1)
    finally:
        beat.terminate()
        beat.wait(timeout=10)


def test_both_indexes_hold_every_document_exactly_once(worker, registry, pg_url):
    worker.stop()  # releases the Qdrant Edge shard (one process at a time)
    data_dir = worker.settings.data_dir
    for collection in ("trip", "replay", "order", "gone"):
        expected = registry_chunks(registry, collection)
        assert keyword_chunks(data_dir, collection) == expected, collection
        assert vector_chunks(data_dir, collection) == expected, collection

    from search.engine import SearchEngine

    settings = Settings(data_dir=data_dir, registry_url=pg_url, rerank_backend="none")
    with SearchEngine(settings, reranker=None) as engine:
        for collection in ("trip", "replay", "order", "gone"):
            assert reconcile(engine.collection(collection).indexer, repair=False).total == 0


def _broker(worker: CeleryWorker):
    import redis

    return redis.Redis.from_url(worker.workers.broker_url, socket_timeout=5)
