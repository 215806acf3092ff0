"""Searches and enqueues against a broker Redis that freezes or dies: each ends on time.

Real processes only: a ``redis-server`` of this module's own as broker and
result store (the session's serves other modules), a rerank worker on it with
the tiny model, and an engine (tantivy, Qdrant Edge, MiniLM) whose reranker is
the Celery client. Faults: the broker stopped with SIGSTOP (accepts connections,
answers nothing) and killed with SIGKILL, before a call and in the middle of
one. Tests run in file order: the frozen broker comes back (SIGCONT), the
killed one is the last thing the worker sees.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from celery.signals import before_task_publish
from support.celery_worker import CeleryWorker, start_worker
from support.index_jobs import documents, stage
from support.redis_server import RedisServer

from search.config import Settings
from search.engine import SearchEngine, build_reranker
from search.errors import BackendUnavailable
from search.ingest import iter_paths
from search.types import Document, SearchRequest, SearchResult
from workers.app import celery_init_app
from workers.client import CeleryReranker
from workers.index_client import IndexClient
from workers.names import RERANK_TASK
from workers.settings import ENQUEUE_TIMEOUT_S

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "sample"
DEADLINE_S = 2.0  # SIEVE_RERANK_TIMEOUT_S of the engine
MARGIN_S = 1.0  # embedding, both legs and fusion, on a busy 2-core machine
LOADED = r"reranker \S+ loaded in"


@pytest.fixture(scope="module")
def broker_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    # Shared by the engine and the worker: the worker reads the passages it scores there.
    return tmp_path_factory.mktemp("broker-faults-data")


@pytest.fixture(scope="module")
def worker(broker_server, tiny_reranker_dir, tmp_path_factory, data_dir) -> Iterator[CeleryWorker]:
    log_path = tmp_path_factory.mktemp("broker-faults") / "worker.log"
    env = {"SIEVE_RERANK_MODEL": str(tiny_reranker_dir), "SIEVE_DATA_DIR": str(data_dir)}
    started = start_worker(broker_server.url, log_path, env=env)
    try:
        started.wait_for_log(LOADED, timeout_s=120)
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def engine(worker, data_dir) -> Iterator[SearchEngine]:
    settings = worker.settings.with_overrides(
        data_dir=data_dir,
        rerank_backend="celery",
        rerank_timeout_s=DEADLINE_S,
    )
    remote = CeleryReranker(celery_init_app(settings, worker.workers), settings, worker.workers)
    eng = SearchEngine(settings, reranker=build_reranker(settings, remote))
    docs = [d for d in iter_paths([SAMPLE / "corpus.jsonl"]) if isinstance(d, Document)]
    assert not eng.index(docs).failed
    yield eng
    eng.close()


def timed_search(engine: SearchEngine, query: str) -> tuple[SearchResult, float]:
    # A new query each time: the pair-score cache must not answer for the workers.
    started = time.perf_counter()
    result = engine.search(SearchRequest(query=query, top_k=10, rerank_depth=10))
    return result, time.perf_counter() - started


def assert_degraded_on_time(result: SearchResult, elapsed: float) -> None:
    assert elapsed < DEADLINE_S + MARGIN_S, elapsed
    assert not result.reranked and result.degraded == ["rerank"], result.degraded_reasons
    assert "broker" in result.degraded_reasons["rerank"], result.degraded_reasons
    assert result.hits  # the fused order, from both legs


def index_client(worker: CeleryWorker) -> IndexClient:
    settings = Settings.from_env({})
    return IndexClient(celery_init_app(settings, worker.workers), worker.workers)


def test_a_search_sends_its_hits_by_reference_and_the_worker_reads_them(engine):
    sent: list[tuple] = []

    def record(sender=None, body=None, **_):
        if sender == RERANK_TASK:
            sent.append((body[0][1], body[1].get("refs")))

    before_task_publish.connect(record)
    try:
        result, _ = timed_search(engine, "how to descale a kettle")
    finally:
        before_task_publish.disconnect(record)
    assert result.reranked and not result.degraded, result.degraded_reasons
    # One task, references only; the worker read every passage from the index the
    # engine wrote (one it could not read would have gone again as text, a second task).
    ((passages, refs),) = sent
    assert passages == [None] * len(refs) and len(refs) == result.rerank_window > 0
    assert result.timings_ms["rerank_read"] > 0


def test_a_frozen_broker_costs_a_search_its_rerank_deadline_only(engine, worker, broker_server):
    warm, _ = timed_search(engine, "how do I fix a flat tire")
    assert warm.reranked, warm.degraded_reasons  # connections made, the worker answers
    pid = broker_server._process.pid
    os.kill(pid, signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        result, elapsed = timed_search(engine, "keep rice from sticking to the pan")
        assert_degraded_on_time(result, elapsed)
        again, elapsed = timed_search(engine, "what to pack for a long bike ride")
        assert_degraded_on_time(again, elapsed)
    finally:
        os.kill(pid, signal.SIGCONT)

    after, _ = timed_search(engine, "how to store tea leaves")
    assert after.reranked, after.degraded_reasons  # nothing to restart


def test_a_frozen_broker_fails_an_enqueue_fast_and_keeps_documents_pending(
    engine, worker, broker_server
):
    jobs = index_client(worker)
    ids = stage(engine.registry, "frozen", documents("frozen", 4))
    pid = broker_server._process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.perf_counter()
        with pytest.raises(BackendUnavailable) as info:
            jobs.enqueue_index("frozen", ids)
        elapsed = time.perf_counter() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert info.value.backend == "broker"
    assert ENQUEUE_TIMEOUT_S <= elapsed < ENQUEUE_TIMEOUT_S + 0.5, elapsed
    assert engine.registry.stats("frozen")["pending"] == 4


def test_a_broker_killed_mid_wait_ends_the_wait_at_once(engine, worker, broker_server):
    warm, _ = timed_search(engine, "first aid for a bee sting")
    assert warm.reranked, warm.degraded_reasons
    broker = redis.Redis.from_url(broker_server.url, socket_timeout=5)
    # The worker's pool process is frozen: the next task is taken but never runs,
    # so the search is surely waiting for its result when the broker dies.
    [pool] = worker.pool_pids()
    os.kill(pool, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(1) as run:
            search = run.submit(timed_search, engine, "what to do in a thunderstorm")
            deadline = time.monotonic() + 10
            while not broker.hlen("unacked"):  # delivered to the worker, not acknowledged
                assert time.monotonic() < deadline and not search.done()
                time.sleep(0.005)
            waited_from = time.perf_counter()
            broker_server.stop()  # SIGKILL
            result, elapsed = search.result(timeout=30)
            after_kill = time.perf_counter() - waited_from
    finally:
        os.kill(pool, signal.SIGCONT)
    assert_degraded_on_time(result, elapsed)
    assert after_kill < 0.5, after_kill  # not Celery's 20 reconnects a second apart

    dead, elapsed = timed_search(engine, "how to avoid jet lag")  # still down
    assert_degraded_on_time(dead, elapsed)
    assert elapsed < 1.0, elapsed  # refused: nothing to wait for


def test_a_killed_broker_fails_an_enqueue_at_once_and_keeps_documents_pending(
    engine, worker, broker_server
):
    assert not broker_server.running
    jobs = index_client(worker)
    ids = stage(engine.registry, "killed", documents("killed", 3))
    started = time.perf_counter()
    with pytest.raises(BackendUnavailable) as info:
        jobs.enqueue_delete("killed", ids)
    assert time.perf_counter() - started < 1.0
    assert info.value.backend == "broker" and "unreachable" in str(info.value)
    assert engine.registry.stats("killed")["pending"] == 3


def test_the_killed_broker_back_is_used_again(engine, broker_server):
    broker_server.start()  # empty, on the same port
    result, elapsed = timed_search(engine, "how often to water tomato plants")
    # The worker may still be reconnecting; the client reconnected at once.
    assert elapsed < DEADLINE_S + MARGIN_S
    if not result.reranked:
        assert "broker" not in result.degraded_reasons["rerank"], result.degraded_reasons
    assert threading.active_count() < 100  # the call threads were reused, not piled up
