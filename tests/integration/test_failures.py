"""Indexing under real failures: real processes, real faults, nothing mocked.

- an index worker whose whole process group is SIGKILLed in the middle of a job;
- the vector store unavailable for a while (another process holds the Qdrant
  Edge shard's write-ahead-log lock, so the worker's engine cannot open it);
- a poison document (its text cleans to nothing: ``prepare`` raises);
- the cache Redis filled far past its memory limit next to the broker Redis.

The registry is a PostgreSQL database of this module's own, the broker the
session's ``redis-server`` (database ``DB``), the workers real ``celery worker``
processes. tantivy and Qdrant Edge admit one writing process per data
directory, so each worker (concurrency 1) owns its own directory, and the test
reads the registry while it runs and the indexes once it has stopped.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery.result import AsyncResult
from support.celery_worker import CeleryWorker
from support.index_jobs import (
    DIM,
    READY,
    documents,
    keyword_chunks,
    result_of,
    stage,
    vector_chunks,
    worker_env,
)
from support.redis_server import RedisServer

from search.config import Settings
from search.reconcile import reconcile
from search.registry import Registry
from search.scores import CachedScore, RedisScoreStore, pair_key
from search.types import Document
from search.vector.edge import QdrantEdgeIndex
from workers.app import celery_init_app
from workers.delivery import DEAD_LETTER_KEY
from workers.index_client import IndexClient
from workers.indexing import attempt_deliveries
from workers.names import INDEX_TASK, RECONCILE_TASK
from workers.settings import WorkerSettings

pytestmark = pytest.mark.integration

DB = 12  # this module's own Redis database
# Short, so that a job lost with a SIGKILLed worker comes back within seconds:
# the broker hands an unacknowledged message out again after this long.
VISIBILITY_S = 12


@pytest.fixture(scope="module")
def registry(pg_url) -> Iterator[Registry]:
    reg = Registry(pg_url)
    yield reg
    reg.close()


def failure_env(data_dir: Path, registry_url: str, queue: str) -> dict[str, str]:
    """An index worker whose lost jobs come back within seconds."""
    return worker_env(
        data_dir,
        registry_url,
        queue,
        SIEVE_BROKER_VISIBILITY_TIMEOUT_S=str(VISIBILITY_S),
        SIEVE_TASK_SOFT_TIME_LIMIT_S=str(VISIBILITY_S - 2),
        SIEVE_TASK_TIME_LIMIT_S=str(VISIBILITY_S - 1),
    )


def wait_until(condition, timeout_s: float, what: str, worker: CeleryWorker | None = None):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what}\n{worker.tail() if worker else ''}"
        time.sleep(0.02)
    return value


def index_contents(data_dir: Path, collection: str) -> dict[str, Counter[str]]:
    """Chunks per document in tantivy and in Qdrant Edge (no worker may have them open)."""
    return {
        "keyword": keyword_chunks(data_dir, collection),
        "vector": vector_chunks(data_dir, collection),
    }


def assert_exactly_once(registry: Registry, data_dir: Path, collection: str, registry_url: str):
    """Every document the registry holds is in both indexes once, at its version."""
    from search.engine import SearchEngine

    expected: Counter[str] = Counter()
    for doc_id, version in registry.versions(collection).items():
        row = registry.get(collection, doc_id)
        assert row.status == "indexed", (doc_id, row.status, row.error)
        assert row.keyword_version == row.vector_version == version
        expected[doc_id] = row.chunks
    contents = index_contents(data_dir, collection)
    assert contents["keyword"] == expected
    assert contents["vector"] == expected
    settings = Settings(data_dir=data_dir, registry_url=registry_url, rerank_backend="none")
    with SearchEngine(settings, reranker=None) as engine:
        report = reconcile(engine.collection(collection).indexer, repair=False)
    assert report.total == 0, report.to_dict()


def unacked_since(broker: redis.Redis, task_id: str) -> float:
    """When the broker handed ``task_id`` out (it is unacknowledged until now)."""
    for tag, raw in broker.hgetall("unacked").items():
        message = json.loads(raw)[0]
        if message["headers"]["id"] == task_id:
            score = broker.zscore("unacked_index", tag)
            assert score is not None
            return float(score)
    raise AssertionError(f"{task_id} is not unacknowledged in the broker")


def test_a_worker_killed_mid_job_loses_nothing_and_duplicates_nothing(
    celery_worker, registry, pg_url, tmp_path
):
    queue = f"index-{uuid.uuid4().hex[:8]}"
    env = failure_env(tmp_path / "data", pg_url, queue)
    first = celery_worker(db=DB, queue=queue, env=env)
    first.wait_for_log(READY, timeout_s=120)
    app = celery_init_app(first.settings, first.workers)
    broker = redis.Redis.from_url(first.workers.broker_url, socket_timeout=5)
    ids = stage(registry, "crash", documents("crash", 64, words=80))

    task_id = IndexClient(app, first.workers).enqueue_index("crash", ids)
    wait_until(lambda: registry.stats("crash")["indexed"] >= 8, 60, "no batch written", first)
    os.killpg(first.process.pid, signal.SIGKILL)  # main process and pool process at once
    first.process.wait(timeout=10)
    written = registry.stats("crash")["indexed"]
    assert 8 <= written < 64, f"killed too late: {written} of 64 already written"

    # Nobody acknowledged the message; the broker gives it out again once its
    # visibility timeout has passed (a starting worker restores such messages).
    handed_out = unacked_since(broker, task_id)
    time.sleep(max(0.0, handed_out + VISIBILITY_S + 0.5 - time.time()))
    # The same data directory: the dead worker's tantivy and Qdrant Edge locks
    # were OS file locks, released with its processes; the lock files stay.
    tantivy_dir = tmp_path / "data" / "collections" / "crash" / "tantivy"
    assert (tantivy_dir / ".tantivy-writer.lock").exists()
    second = celery_worker(db=DB, queue=queue, env=env)
    second.wait_for_log(READY, timeout_s=120)

    result = result_of(app, task_id)

    # The second delivery skipped what the first acknowledged and wrote the rest.
    assert result["failed"] == {} and result["missing"] == []
    assert (result["skipped"], result["indexed"]) == (written, 64 - written)
    assert attempt_deliveries(broker, task_id) == 2
    assert "LockBusy" not in second.log() and "WouldBlock" not in second.log()
    second.stop()
    assert_exactly_once(registry, tmp_path / "data", "crash", pg_url)


@pytest.fixture(scope="module")
def worker(pg_url, celery_worker, tmp_path_factory) -> CeleryWorker:
    queue = f"index-{uuid.uuid4().hex[:8]}"
    data_dir = tmp_path_factory.mktemp("failures-data")
    started = celery_worker(db=DB, queue=queue, env=failure_env(data_dir, pg_url, queue))
    started.wait_for_log(READY, timeout_s=120)
    return started


def test_documents_wait_out_a_vector_store_outage(worker, registry, pg_url):
    app = celery_init_app(worker.settings, worker.workers)
    jobs = IndexClient(app, worker.workers)
    shard = worker.settings.data_dir / "collections" / "outage" / "qdrant-edge"
    # The outage: this process opens the collection's shard first and keeps it,
    # so the worker's Qdrant Edge cannot take the write-ahead log's lock.
    holder = QdrantEdgeIndex(shard, DIM)
    holder.count()
    try:
        ids = stage(registry, "outage", documents("outage", 12, seed=1))
        first = jobs.enqueue_index("outage", ids[:6])
        second = jobs.enqueue_index("outage", ids[6:])
        # Each attempt fails on the vector write and is retried with backoff (and
        # jitter: 0-1 s, 0-2 s, 0-4 s, ...); three attempts each, then it comes back.
        for task_id in (first, second):
            worker.wait_for_log(rf"{task_id}\] retry: Retry in", count=3, timeout_s=60)
        # IndexLocked: the BackendUnavailable that names a lock held elsewhere.
        assert "IndexLocked" in worker.log() and "open in another" in worker.log()
        # Between attempts (RETRY) or in one (STARTED): not finished, not failed.
        assert AsyncResult(first, app=app).state in ("RETRY", "STARTED")
        stats = registry.stats("outage")
        assert stats["pending"] == 12 and stats["failed"] == 0  # waiting, not given up
    finally:
        holder.close()  # the vector store is back

    results = [result_of(app, task_id) for task_id in (first, second)]

    assert [(r["indexed"], r["failed"]) for r in results] == [(6, {}), (6, {})]
    # Every retry was a new attempt with a delivery count of its own: four or more
    # deliveries of one task id, none dead-lettered (the limit is 3 per attempt).
    broker = redis.Redis.from_url(worker.workers.broker_url, socket_timeout=5)
    for task_id in (first, second):
        attempts = worker.log().count(f"{task_id}] retry: Retry in") + 1
        assert attempts >= 4
        assert [attempt_deliveries(broker, task_id, n) for n in range(attempts)] == [1] * attempts
    dead = [json.loads(r)["task_id"] for r in broker.lrange(DEAD_LETTER_KEY, 0, -1)]
    assert first not in dead and second not in dead
    report = result_of(app, app.send_task(RECONCILE_TASK, args=("outage",), queue=worker.queue).id)
    assert report["collections"]["outage"]["total"] == 0, report
    assert registry.stats("outage")["indexed"] == 12


def test_a_poison_document_fails_alone_and_is_recorded(worker, registry):
    app = celery_init_app(worker.settings, worker.workers)
    jobs = IndexClient(app, worker.workers)
    # Markup with no text: cleaning leaves nothing to chunk, every time.
    poison = Document(
        id="poison-bad", text="<div><p> </p><!-- empty --></div>", content_type="html"
    )
    ids = stage(registry, "poison", [*documents("poison", 7, seed=2), poison])

    result = result_of(app, jobs.enqueue_index("poison", ids))

    assert result["indexed"] == 7 and list(result["failed"]) == ["poison-bad"]
    assert "no text after cleaning" in result["failed"]["poison-bad"]
    row = registry.get("poison", "poison-bad")
    assert row.status == "failed" and "no text after cleaning" in row.error
    assert registry.stats("poison")["indexed"] == 7
    # Sent again it fails again, at once: not retried, not dead-lettered.
    again_id = jobs.enqueue_index("poison", ids)
    again = result_of(app, again_id)
    assert (again["indexed"], again["skipped"], list(again["failed"])) == (0, 7, ["poison-bad"])
    assert f"{again_id}] retry" not in worker.log()


def test_both_indexes_match_the_registry_after_the_failures(worker, registry, pg_url):
    worker.stop()
    for collection in ("outage", "poison"):
        if collection == "poison":  # the poison document is failed, not indexed
            contents = index_contents(worker.settings.data_dir, collection)
            assert "poison-bad" not in contents["keyword"] | contents["vector"]
            assert sum(contents["keyword"].values()) == sum(contents["vector"].values()) >= 7
            continue
        assert_exactly_once(registry, worker.settings.data_dir, collection, pg_url)


# The most a Redis may sit above maxmemory right after a command: its own reply
# and buffers (eviction runs before a command, not after it).
ONE_COMMAND_BYTES = 16 * 1024


def test_a_full_cache_never_touches_the_broker():
    cache = RedisServer(maxmemory="2mb", maxmemory_policy="allkeys-lru")
    broker_server = RedisServer(maxmemory="256mb", maxmemory_policy="noeviction")
    try:
        cache.start()
        broker_server.start()
        settings = Settings(cache_url=cache.url)
        workers = WorkerSettings(broker_url=broker_server.url, index_queue="idle")
        app = celery_init_app(settings, workers)
        broker = redis.Redis.from_url(broker_server.url, socket_timeout=5)
        # Jobs waiting in the broker (no worker consumes "idle"), one of them taken
        # by a consumer that has not acknowledged it, and a delivery counter.
        jobs = IndexClient(app, workers)
        task_ids = [jobs.enqueue_index("docs", [f"d{i}"]) for i in range(20)]
        with app.connection_for_read() as conn, conn.SimpleQueue("idle") as queue:
            taken = queue.get(timeout=5)
            task = app.tasks[INDEX_TASK]
            task.push_request(retries=0)
            try:
                assert task._count(taken.headers["id"], 3600) == 1
            finally:
                task.pop_request()
            before = {key: broker.dump(key) for key in broker.keys("*")}
            assert broker.llen("idle") == 19 and broker.hlen("unacked") == 1

            store = RedisScoreStore(cache.url, timeout_s=2.0)
            passage = "a passage of about the length a reranker scores " * 4
            for batch in range(40):  # ~200,000 scores, far beyond 2 MB
                store.set_many(
                    {
                        pair_key("model@rev:512", f"query {batch}", f"{passage} {i}"): (
                            CachedScore(logit=0.5, start=0, end=10)
                        )
                        for i in range(5_000)
                    },
                    ttl_s=3600,
                )
            store.close()

            assert store.stats()["errors"] == 0  # an LRU cache makes room instead of refusing
            cache_client = redis.Redis.from_url(cache.url, socket_timeout=5)
            assert cache_client.info("stats")["evicted_keys"] > 0
            assert cache_client.dbsize() < 20_000  # of ~200,000 written
            # Redis evicts before it runs each command, so it may sit above the limit
            # by what the last commands allocated (the INFO reply included): allow one
            # command's worth, against the ~40 MB that were written without a refusal.
            cache_client.set("sieve:probe", "1")
            cache_client.delete("sieve:probe")
            memory = cache_client.info("memory")
            assert memory["maxmemory"] == 2 * 1024 * 1024
            assert memory["used_memory"] <= memory["maxmemory"] + ONE_COMMAND_BYTES
            after = {key: broker.dump(key) for key in broker.keys("*")}
            assert after == before  # every queue, unacked entry and counter, byte for byte
            assert broker.info()["evicted_keys"] == 0
            assert attempt_deliveries(broker, taken.headers["id"]) == 1
            assert broker.ttl(f"sieve:deliveries:{taken.headers['id']}") > 0
            assert set(task_ids) >= {taken.headers["id"]}
    finally:
        cache.cleanup()
        broker_server.cleanup()
