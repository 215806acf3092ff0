"""Celery rerank workers for real: a worker process, a Redis broker, the tiny model.

One worker (prefork, one pool process) serves the module; tests that need a
different worker (a poison task, a missing model) start their own. Everything
lives in Redis database ``DB`` under unique queue names, so nothing here sees
another module's messages. Tests run in file order: the slow ones (a killed
worker, a missed deadline) leave the shared worker busy for a while, so they
come after the round trip.
"""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import psutil
import pytest
import redis
from celery.signals import before_task_publish
from support.celery_worker import REPO, CeleryWorker
from support.redis_server import RedisServer

from search.config import Settings
from search.errors import BackendUnavailable
from search.keyword import open_keyword_index
from search.passages import passage_ref, rerank_passage
from search.rerank import CachingReranker, CrossEncoderReranker
from search.rerank.status import describe
from search.scores import LruScoreStore
from search.text import analyze
from search.types import Chunk
from workers.app import celery_init_app
from workers.client import CeleryReranker
from workers.delivery import DEAD_LETTER_KEY, DELIVERIES_KEY, DeadLettered, deliveries
from workers.names import RERANK_TASK
from workers.settings import WorkerSettings
from workers.tasks import EXPIRED_KEY, RerankExpired

pytestmark = pytest.mark.integration

DB = 7  # this module's own Redis database: its queues, counters and dead letters
LOADED = r"reranker \S+ loaded in"
KILLED = "exited with 'signal 9 (SIGKILL)'"  # the worker's line for a lost pool process
CRASH_TASK = "sieve.test.crash"  # support/crash_app.py (not imported: it reads the env)
QUERY = "how do I keep rice from sticking to the pan"
PASSAGES = [
    "Rinse the rice until the water runs clear, then cook it in a heavy pan.",
    "Tomato plants need full sun and compost worked into the soil.",
    "保存茶叶要避光、防潮、密封。",
    "Check the tyre pressure before a long bike ride.",
    # Longer than the model's window: scored by its best window, with offsets.
    " ".join(["Heat the skillet slowly and never rush the water."] * 90),
]


def long_passages(n: int, seed: int = 0) -> list[str]:
    """``n`` passages of ~450 words, each filling the 512-token window.

    The tiny model takes ~2.5 ms of CPU for one: 200 keep a worker busy ~0.5 s.
    """
    words = "the water heat cook rice pan skillet knife garden soil plant tomato compost".split()
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(450)) for _ in range(n)]


@pytest.fixture(scope="module")
def worker(celery_worker, tiny_reranker_dir, tmp_path_factory) -> CeleryWorker:
    # Its own data directory: the chunk store it reads referenced passages from.
    env = {
        "SIEVE_RERANK_MODEL": str(tiny_reranker_dir),
        "SIEVE_DATA_DIR": str(tmp_path_factory.mktemp("worker-data")),
    }
    started = celery_worker(db=DB, env=env)
    started.wait_for_log(LOADED, timeout_s=120)  # loaded in the pool process, after the fork
    return started


@pytest.fixture(scope="module")
def broker(worker) -> redis.Redis:
    return redis.Redis.from_url(worker.workers.broker_url, socket_timeout=5)


def client(worker: CeleryWorker, timeout_s: float) -> CeleryReranker:
    settings = worker.settings.with_overrides(rerank_timeout_s=timeout_s)
    return CeleryReranker(celery_init_app(settings, worker.workers), settings, worker.workers)


def test_round_trip_matches_the_in_process_reranker(worker):
    remote = client(worker, timeout_s=30)
    local = CrossEncoderReranker.from_settings(worker.settings)
    assert remote.model_key.endswith("@default:512")  # the settings' guess until a worker answers

    got = remote.rerank(QUERY, PASSAGES)
    want = local.rerank(QUERY, PASSAGES)

    assert np.allclose([s.logit for s in got.scores], [s.logit for s in want.scores], atol=1e-5)
    assert [(s.start, s.end) for s in got.scores] == [(s.start, s.end) for s in want.scores]
    assert got.scores[-1].start > 0 or got.scores[-1].end < len(PASSAGES[-1])  # a window
    assert all(math.isclose(s.score, 1 / (1 + math.exp(-s.logit))) for s in got.scores)
    assert remote.model_key == local.model_key  # learned from the worker's reply
    timings = got.timings_ms
    assert timings["model"] > 0 and timings["queue"] >= 0
    assert timings["roundtrip"] >= timings["model"] + timings["queue"] - 1e-6
    assert got.tokens == want.tokens > 0  # the worker reports the tokens it read
    cut, cut_here = (
        remote.rerank(QUERY, PASSAGES, max_doc_tokens=8),
        local.rerank(QUERY, PASSAGES, max_doc_tokens=8),
    )  # the option travels with the task
    assert np.allclose([s.logit for s in cut.scores], [s.logit for s in cut_here.scores], atol=1e-5)
    assert cut.tokens == cut_here.tokens < got.tokens

    started = time.perf_counter()
    assert remote.rerank(QUERY, []).scores == []  # no round trip for nothing
    assert time.perf_counter() - started < 0.01


@contextmanager
def published() -> Iterator[list[dict]]:
    """What each rerank task sent from this process carried: its passages and refs."""
    sent: list[dict] = []

    def record(sender=None, body=None, **_):
        if sender == RERANK_TASK:
            sent.append({"passages": body[0][1], "refs": body[1].get("refs")})

    before_task_publish.connect(record)
    try:
        yield sent
    finally:
        before_task_publish.disconnect(record)


def index_passages(settings: Settings, collection: str, titled: list[tuple[str, str]]) -> list:
    """Write (title, text) chunks into ``collection``'s keyword index; their chunk ids."""
    index = open_keyword_index(settings, collection)
    chunks = [
        Chunk(id=f"{collection}-{i}", doc_id=f"doc-{i}", ordinal=0, text=text, start=0,
              end=len(text), title=title)
        for i, (title, text) in enumerate(titled)
    ]
    try:
        index.upsert(chunks, [analyze(f"{c.title} {c.text}") for c in chunks])
    finally:
        index.close()  # the writer lock: the worker only reads
    return [c.id for c in chunks]


def test_a_rerank_by_chunk_id_scores_as_by_text_and_unreadable_ones_travel_as_text(worker):
    remote = client(worker, timeout_s=30)
    titled = [("Rice", PASSAGES[0]), ("", PASSAGES[1]), ("茶", PASSAGES[2]), ("", PASSAGES[4])]
    ids = index_passages(worker.settings, "by-id", titled)
    texts = [rerank_passage(title, text)[0] for title, text in titled]
    with published() as sent:
        by_text = remote.rerank(QUERY, texts)
        refs = [passage_ref("by-id", chunk_id, t) for chunk_id, t in zip(ids, texts, strict=True)]
        by_id = remote.rerank(QUERY, texts, refs=refs)
        # Not readable as referenced: an unknown chunk, one rewritten since (another
        # digest), an unknown collection; and an ad-hoc passage with no ref at all.
        mixed_texts = [*texts, "An ad-hoc passage.", texts[1] + " edited", texts[0], texts[3]]
        mixed_refs = [
            *refs,
            None,
            passage_ref("by-id", ids[1], texts[1] + " edited"),  # the store holds the old
            passage_ref("by-id", "no-such-chunk", texts[0]),
            passage_ref("no-such-collection", ids[3], texts[3]),
        ]
        mixed = remote.rerank(QUERY, mixed_texts, refs=mixed_refs)
        plain_mixed = remote.rerank(QUERY, mixed_texts)

    logits = [s.logit for s in by_text.scores]
    assert np.allclose([s.logit for s in by_id.scores], logits, atol=1e-5)
    assert [(s.start, s.end) for s in by_id.scores] == [(s.start, s.end) for s in by_text.scores]
    assert by_id.tokens == by_text.tokens and by_id.timings_ms["read"] > 0
    want = [s.logit for s in plain_mixed.scores]
    assert np.allclose([s.logit for s in mixed.scores], want, atol=1e-5)
    # What travelled: text, then references only, then references and text, then the
    # three unreadable passages again as text (a second task), then text.
    assert [m["refs"] is not None for m in sent] == [False, True, True, False, False]
    assert sent[1]["passages"] == [None] * 4
    assert sent[2]["passages"] == [None] * 4 + ["An ad-hoc passage.", None, None, None]
    assert sent[3]["passages"] == mixed_texts[5:]


def test_pairs_the_cache_answers_are_not_sent_and_the_misses_go_by_reference(worker):
    titled = [("Rice", PASSAGES[0]), ("", PASSAGES[1]), ("", PASSAGES[3])]
    ids = index_passages(worker.settings, "cached", titled)
    texts = [rerank_passage(title, text)[0] for title, text in titled]
    refs = [passage_ref("cached", chunk_id, t) for chunk_id, t in zip(ids, texts, strict=True)]
    remote = client(worker, timeout_s=30)
    remote.rerank(QUERY, ["learn the workers' model key"])  # the cache keys on it
    cached = CachingReranker(remote, LruScoreStore(100), 60)
    assert cached.reads_passages
    with published() as sent:
        first = cached.rerank(QUERY, texts[:1], refs=refs[:1])
        second = cached.rerank(QUERY, texts, refs=refs)
        third = cached.rerank(QUERY, texts, refs=refs)
    assert [len(m["refs"]) for m in sent] == [1, 2]  # the third call sent nothing
    assert sent[1]["refs"] == [["cached", ids[i], refs[i].digest] for i in (1, 2)]
    assert (first.cached, second.cached, third.cached) == (0, 1, 3)
    assert [s.logit for s in third.scores] == [s.logit for s in second.scores]


def test_concurrent_callers_each_get_their_own_scores(worker):
    remote = client(worker, timeout_s=30)
    queries = [f"{QUERY} {i}" for i in range(6)]
    with ThreadPoolExecutor(3) as pool:  # Celery keeps a result consumer per thread
        batches = list(pool.map(lambda q: remote.rerank(q, PASSAGES), queries))
    local = CrossEncoderReranker.from_settings(worker.settings)
    for query, batch in zip(queries, batches, strict=True):
        want = [s.logit for s in local.rerank(query, PASSAGES).scores]
        assert np.allclose([s.logit for s in batch.scores], want, atol=1e-5)


def test_a_model_swap_degrades_one_call_then_follows_the_workers(worker):
    remote = client(worker, timeout_s=30)
    remote.rerank(QUERY, PASSAGES)
    learned = remote.model_key
    # As if the workers had served another model until now (no second model needed).
    remote._reported_key = "old/reranker@abc:512"
    with pytest.raises(BackendUnavailable) as info:
        remote.rerank(QUERY, PASSAGES)  # the caller keyed this call on the old model
    assert info.value.data["reason"] == "model changed"
    assert remote.model_key == learned
    assert len(remote.rerank(QUERY, PASSAGES).scores) == len(PASSAGES)


def test_a_task_whose_worker_is_killed_is_redelivered_and_completes(worker, broker):
    passages = long_passages(400)
    before = set(broker.scan_iter(f"{DELIVERIES_KEY}*"))
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(client(worker, timeout_s=90).rerank, QUERY, passages)
        deadline = time.monotonic() + 30
        # The counter appears just before the body starts (seconds of work).
        while not (new := set(broker.scan_iter(f"{DELIVERIES_KEY}*")) - before):
            assert time.monotonic() < deadline, worker.tail()
            time.sleep(0.005)
        task_id = new.pop().decode().removeprefix(DELIVERIES_KEY)
        [child] = worker.pool_pids()
        psutil.Process(child).kill()  # SIGKILL mid-task, as the OOM killer would
        batch = call.result(timeout=120)

    assert len(batch.scores) == len(passages)  # not lost: the client got its answer
    assert deliveries(broker, task_id) == 2
    # Only the second run finished (the line is logged just after the result is stored).
    worker.wait_for_log(re.escape(f"{task_id}] succeeded"), timeout_s=10)
    assert worker.log().count(f"{task_id}] succeeded") == 1
    assert child not in worker.pool_pids() and worker.alive


def test_a_task_that_kills_every_worker_is_dead_lettered(celery_worker, broker):
    # 2, not the default 3, to save time: Celery's prefork pool notices a process
    # that killed itself on receipt of a job only at its 5 s pool check.
    limit = 2
    crasher = celery_worker(
        db=DB,
        app="support.crash_app",
        # Not the queue it consumes: this worker never loads the reranker model.
        env={"SIEVE_TASK_MAX_DELIVERIES": str(limit), "SIEVE_RERANK_QUEUE": "rerank-unused"},
    )
    app = celery_init_app(crasher.settings, crasher.workers)
    result = app.send_task(CRASH_TASK, queue=crasher.queue)

    error = result.get(timeout=60, propagate=False)

    assert isinstance(error, DeadLettered), error
    # The body ran on deliveries 1..limit, each killing its process; delivery
    # limit + 1 ran nothing, was recorded and failed; the message is gone.
    assert crasher.log().count(KILLED) == limit, crasher.tail()
    assert deliveries(broker, result.id) == limit + 1
    records = [json.loads(r) for r in broker.lrange(DEAD_LETTER_KEY, 0, -1)]
    [record] = [r for r in records if r["task_id"] == result.id]
    assert record["name"] == CRASH_TASK and record["deliveries"] == limit + 1

    # The message leaves the broker (acknowledged right after its result is
    # stored: poll for it), so it cannot be delivered again.
    def in_broker() -> bool:
        queued = [json.loads(m)["headers"]["id"] for m in broker.lrange(crasher.queue, 0, -1)]
        unacked = [json.loads(m)[0]["headers"]["id"] for m in broker.hvals("unacked")]
        return result.id in queued or result.id in unacked

    deadline = time.monotonic() + 10
    while in_broker():
        assert time.monotonic() < deadline, "the dead-lettered message is still in the broker"
        time.sleep(0.05)
    assert crasher.log().count(KILLED) == limit
    assert crasher.alive and len(crasher.wait_for_pool(1)) == 1
    active = app.control.inspect(destination=[crasher.hostname], timeout=5).active()
    assert active == {crasher.hostname: []}  # alive, answering, and running nothing


def test_a_missed_deadline_raises_promptly(worker):
    late = client(worker, timeout_s=0.05)
    started = time.perf_counter()
    with pytest.raises(BackendUnavailable) as info:
        late.rerank(QUERY, long_passages(200, seed=1))
    elapsed = time.perf_counter() - started
    assert info.value.data["reason"] == "deadline"
    assert info.value.backend == "rerank"
    assert elapsed < 0.05 + 0.25, elapsed


def test_a_missing_model_fails_tasks_not_the_worker(celery_worker):
    broken = celery_worker(db=DB, env={"SIEVE_RERANK_MODEL": "no-such/reranker"})
    broken.wait_for_log("reranker not loaded", timeout_s=120)
    with pytest.raises(BackendUnavailable) as info:
        client(broken, timeout_s=30).rerank(QUERY, PASSAGES)
    # ModelNotFound's own message, rebuilt on this side of the JSON boundary.
    assert info.value.data["error"] == "ModelNotFound"
    assert "no-such/reranker" in info.value.data["reason"]
    assert broken.alive


def test_no_worker_or_no_broker_is_unavailable_not_a_hang():
    server = RedisServer()  # its own: stopping the shared one would disturb the module's worker
    try:
        server.start()
        settings = Settings(rerank_timeout_s=0.5)
        workers = WorkerSettings(broker_url=server.url, rerank_queue="nobody")
        reranker = CeleryReranker(celery_init_app(settings, workers), settings, workers)

        def attempt() -> tuple[str, float]:
            started = time.perf_counter()
            with pytest.raises(BackendUnavailable) as info:
                reranker.rerank(QUERY, PASSAGES)
            return info.value.data["reason"], time.perf_counter() - started

        reason, elapsed = attempt()  # a broker, but no worker on the queue
        assert reason == "deadline" and elapsed < 0.5 + 0.25
        # What /readyz and the search page then say: no worker, and how to start one.
        status = describe(settings.with_overrides(rerank_backend="celery"), reranker, cuda=None)
        assert status.reason == "no_worker" and "no rerank result within" in status.why
        assert status.fix == "start one: sieve worker --queues rerank"
        server.stop()
        reason, elapsed = attempt()
        assert reason == "broker" and elapsed < 1.5, elapsed
        server.start()
        reason, elapsed = attempt()  # recovered: back to waiting for a worker
        assert reason == "deadline" and elapsed < 0.5 + 0.25
    finally:
        server.cleanup()


def expired_counts(broker: redis.Redis) -> dict[str, int]:
    """``sieve:rerank:expired``: rerank tasks dropped, by where their deadline passed."""
    return {k.decode(): int(v) for k, v in broker.hgetall(EXPIRED_KEY).items()}


def wait_for_count(broker: redis.Redis, stage: str, count: int) -> None:
    # Celery's own expiry is counted after it stores the task's result.
    deadline = time.monotonic() + 10
    while expired_counts(broker).get(stage, 0) < count:
        assert time.monotonic() < deadline, expired_counts(broker)
        time.sleep(0.01)


# "... after 3 of 64 batches" or "... after 512 of 2000 passages tokenised".
STOPPED = re.compile(r"rerank stopped at its deadline after (\d+) of (\d+)")


def test_a_task_whose_deadline_passes_mid_run_is_dropped_and_the_worker_moves_on(worker, broker):
    before = expired_counts(broker)
    stops = len(STOPPED.findall(worker.log()))
    # ~2 s of tokenising and ~60 batches of 0.1-0.4 s each for the tiny model here.
    slow = long_passages(2000, seed=3)
    started = time.perf_counter()
    with pytest.raises(BackendUnavailable) as info:
        client(worker, timeout_s=1.5).rerank(QUERY, slow)
    assert info.value.data["reason"] == "deadline"

    # The next task is answered at once: the worker dropped the first at its next
    # step instead of scoring the rest of it for nobody.
    answer = client(worker, timeout_s=30).rerank(QUERY, PASSAGES)
    took = time.perf_counter() - started

    assert len(answer.scores) == len(PASSAGES)
    assert took < 1.5 + 2.5, took  # against the 10-15 s the whole task takes here
    # Counted where its deadline passed: mid-run (tokenising or between batches),
    # or before it started if handing 6 MB of passages to the pool process took
    # the whole deadline.
    after = expired_counts(broker)
    dropped = {stage: after.get(stage, 0) - before.get(stage, 0) for stage in ("queued", "running")}
    assert sum(dropped.values()) == 1, dropped
    if dropped["running"]:
        worker.wait_for_log(STOPPED, count=stops + 1, timeout_s=10)
        done, total = map(int, STOPPED.findall(worker.log())[-1])
        assert done < total, (done, total)
    assert "RerankExpired" in worker.log()


def test_tasks_whose_deadline_passes_in_the_queue_are_dropped_unrun(worker, broker):
    app = celery_init_app(worker.settings, worker.workers)
    before = expired_counts(broker).get("queued", 0)

    def send(passages: list[str], deadline_s: float, **options: float):
        deadline_at = time.time() + deadline_s
        return app.send_task(
            RERANK_TASK,
            args=(QUERY, passages),
            kwargs={"deadline_at": deadline_at},
            queue=worker.queue,
            **options,
        )

    busy = send(long_passages(400, seed=4), 60)  # ~1 s of work: the two below wait for it
    late = send(PASSAGES, 0.2)  # no Celery expiry: the task's own check drops it
    gone = send(PASSAGES, 0.2, expires=0.2)  # as the client sends: whichever check sees it

    assert len(busy.get(timeout=60)["scores"]) == 400  # its deadline had not passed
    error = late.get(timeout=30, propagate=False)
    # Only the message crosses JSON (Celery rebuilds the type from its name).
    assert isinstance(error, RerankExpired) and "before it started" in str(error), error
    assert late.state == "FAILURE"
    assert gone.get(timeout=30, propagate=False) is not None and gone.state != "SUCCESS"
    wait_for_count(broker, "queued", before + 2)
    assert f"{late.id}] succeeded" not in worker.log()


def test_importing_the_worker_modules_loads_no_model():
    code = (
        "import sys, workers.app, workers.tasks, workers.client, workers.delivery\n"
        "app = workers.app.app\n"  # the lazy app of `celery -A workers.app`, from the env
        "assert 'sieve.rerank' in app.tasks\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    env = {"SIEVE_BROKER_URL": "redis://127.0.0.1:1/0", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "[]", out.stderr
