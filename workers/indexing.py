"""Indexing jobs on Celery: the ``index`` queue's tasks (``workers.index_client`` sends them).

Tasks take ids and small JSON, never objects, and are thin adapters around
``search.indexing`` and ``search.reconcile``:

- ``sieve.index_documents(collection, doc_ids)`` indexes documents the registry
  already holds, each at its recorded version. The registry is the outbox: an
  upload stages documents (``Registry.stage``) and only then enqueues their ids
  (``IndexClient.enqueue_index``), so a lost message loses nothing the reconciler cannot
  find. Idempotent: chunk and point ids are deterministic, a document already
  in both indexes at its registry version is skipped, and an older version
  than the registry's is never written. Returns
  ``{"indexed", "skipped", "failed": {doc_id: error}, "missing", "chunks", "seconds"}``;
  every failure is also recorded in the registry (status ``failed``, ``error``).
- ``sieve.delete_documents(collection, doc_ids)`` deletes from both indexes,
  then from the registry. Returns ``{"deleted": [ids the registry knew]}``.
- ``sieve.reconcile(collection=None)`` compares registry and indexes and
  repairs any difference (every collection when ``None``); celery beat sends
  it every ``reconcile_interval_s`` (``celery -A workers.app beat``).

Retries and the delivery limit. A backend that is down (``BackendUnavailable``
from Elasticsearch, Qdrant, tantivy or the registry's database) or the soft
time limit ends the attempt, which Celery retries with exponential backoff and
jitter, up to ``index_max_retries`` times; documents written before it stay
acknowledged and are skipped by the retry. The last attempt does not raise
for an outage: it records what still fails in the registry and returns it. A retry keeps the
task id, so ``workers.delivery`` would count it as a delivery and, past
``task_max_deliveries``, dead-letter a job that only waited for a backend.
``IndexTask`` therefore counts deliveries *per attempt*: a retry is a new
message with a fresh count, and the limit keeps its meaning (a message whose
run kills its worker ``task_max_deliveries`` times in a row is dead-lettered).
A job runs at most ``(index_max_retries + 1) * task_max_deliveries`` times.
Each retry waits in the worker as an unacknowledged ETA message, so the
backoff is capped well below the broker's visibility timeout (a longer wait
would be handed to a second worker as well).

One engine per worker process, built after the fork (in ``worker_process_init``
where the worker consumes the index queue, else on first use) and closed when
the process exits. The embedded engines (tantivy, Qdrant Edge) are
single-process: one index worker process (``--concurrency 1``) per data
directory. With Elasticsearch and a Qdrant server, run as many as you like.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis
from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_process_shutdown
from sqlalchemy.exc import OperationalError as DatabaseError

from search.config import Settings
from search.errors import (
    BackendUnavailable,
    InvalidRequest,
    RegistryError,
)
from search.indexing import IndexReport
from search.reconcile import reconcile_all
from search.warmup import EMBEDDER
from search.warmup import OK as WARM
from workers.delivery import DeadLettered, DeliveryLimitedTask, deliveries
from workers.names import DELETE_TASK, INDEX_TASK, RECONCILE_TASK
from workers.settings import WorkerSettings

if TYPE_CHECKING:
    from search.engine import SearchEngine

log = logging.getLogger(__name__)

# The longest wait between two retries, unless the visibility timeout is shorter.
RETRY_BACKOFF_MAX_S = 300
# Worth another attempt: an engine or the registry's database unreachable, or the
# job's time limit (the next attempt skips what this one acknowledged).
RETRYABLE: tuple[type[Exception], ...] = (BackendUnavailable, DatabaseError, SoftTimeLimitExceeded)


def attempt_id(task_id: str, retries: int) -> str:
    """The delivery counter's name for one attempt: the first keeps the plain task id."""
    return task_id if retries == 0 else f"{task_id}:retry{retries}"


def attempt_deliveries(client: redis.Redis, task_id: str, retries: int = 0) -> int:
    """How many times attempt ``retries`` of an index job reached a pool process."""
    return deliveries(client, attempt_id(task_id, retries))


def retry_backoff_max(workers: WorkerSettings) -> int:
    """The cap of the exponential backoff: at most half the broker's visibility timeout."""
    return max(1, min(RETRY_BACKOFF_MAX_S, workers.broker_visibility_timeout_s // 2))


class IndexTask(DeliveryLimitedTask):
    """``DeliveryLimitedTask`` whose limit counts deliveries per attempt (see the module doc)."""

    def _count(self, task_id: str, ttl_s: int) -> int:
        return super()._count(attempt_id(task_id, int(self.request.retries or 0)), ttl_s)


class EngineSlot:
    """The one ``SearchEngine`` of a worker process, built after the fork."""

    def __init__(self, app: Celery, settings: Settings, queue: str) -> None:
        self.app = app
        self.settings = settings
        self.queue = queue  # the index queue: only its workers build the engine early
        self._engine: SearchEngine | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def get(self) -> SearchEngine:
        """This process's engine, built on first use (never one inherited through a fork)."""
        with self._lock:
            if self._engine is None or self._pid != os.getpid():
                # Imported here: a process that only enqueues never needs the engines.
                from search.engine import SearchEngine

                # No reranker: indexing ranks nothing, and building one looks for a model.
                self._engine = SearchEngine(self.settings, reranker=None)
                self._pid = os.getpid()
            return self._engine

    def warm_up(self) -> None:
        """Build the engine and load what indexing uses now rather than in the first job:
        the Chinese dictionary and the embedding model, with a first pass
        (``search.warmup``, the warm-up ``sieve serve`` runs)."""
        engine = self.get()
        started = time.perf_counter()
        state = engine.warmup.run()  # logs each part that fails, raises nothing
        failed = {part: outcome for part, outcome in state.items() if outcome != WARM}
        if failed:
            # Stay up: every job that needs a missing part records why on its documents.
            log.error("index worker: not loaded, index jobs will fail: %s", failed)
            return
        log.info(
            "index worker ready: embedder %s and %s loaded in %.2f s",
            engine.embedder.model_name,
            ", ".join(part for part in state if part != EMBEDDER) or "nothing else",
            time.perf_counter() - started,
        )

    def close(self) -> None:
        """Close this process's engine: flushes the indexes and releases their locks."""
        with self._lock:
            engine, self._engine = self._engine, None
            if engine is not None and self._pid == os.getpid():
                engine.close()


_slots: weakref.WeakSet[EngineSlot] = weakref.WeakSet()


@worker_process_init.connect
def _build_after_fork(**_: Any) -> None:
    for slot in list(_slots):
        if slot.queue in slot.app.amqp.queues.consume_from:
            slot.warm_up()


@worker_process_shutdown.connect
def _close_on_exit(**_: Any) -> None:
    for slot in list(_slots):
        slot.close()


def check_doc_ids(doc_ids: object) -> list[str]:
    """``doc_ids`` as a list of distinct non-empty strings, or ``InvalidRequest``.

    How many a job may hold is the sender's rule: the API admits at most
    ``SIEVE_MAX_BATCH_DOCS`` documents per request, and one request is one job.
    """
    if isinstance(doc_ids, str) or not isinstance(doc_ids, Sequence):
        raise InvalidRequest("doc_ids must be a list of document ids")
    if not all(isinstance(d, str) and d for d in doc_ids):
        raise InvalidRequest("every document id must be a non-empty string")
    ids = list(dict.fromkeys(doc_ids))
    if not ids:
        raise InvalidRequest("no document ids given: nothing to do")
    return ids


def report_dict(report: IndexReport) -> dict[str, Any]:
    """An ``IndexReport`` as the JSON result of an index job."""
    return {
        "indexed": report.indexed,
        "skipped": report.skipped,
        "failed": dict(report.failed),
        "refused": dict(report.refused),
        "missing": list(report.missing),
        "chunks": report.chunks,
        "seconds": round(report.seconds, 3),
    }


def register_index_tasks(app: Celery, settings: Settings, workers: WorkerSettings) -> None:
    """Add the index, delete and reconcile tasks (``workers.app.celery_init_app`` calls this)."""
    slot = EngineSlot(app, settings, workers.index_queue)
    _slots.add(slot)
    retries: dict[str, Any] = {
        "autoretry_for": RETRYABLE,
        "retry_backoff": True,
        "retry_backoff_max": retry_backoff_max(workers),
        "retry_jitter": True,
        "max_retries": workers.index_max_retries,
    }
    expected = (InvalidRequest, DeadLettered)

    @app.task(name=INDEX_TASK, base=IndexTask, bind=True, shared=False, throws=expected, **retries)
    def index_documents(self: Task, collection: str, doc_ids: list[str]) -> dict[str, Any]:
        """Index documents staged in the registry; ``{"indexed", "skipped", "failed", ...}``."""
        ids = check_doc_ids(doc_ids)
        # Outages end the attempt (to be retried) except on the last one, which
        # records them as the documents' failures. The time limit always ends it:
        # it says nothing about the document that was being written.
        last = self.request.retries >= workers.index_max_retries
        propagate = (
            (SoftTimeLimitExceeded,) if last else (SoftTimeLimitExceeded, BackendUnavailable)
        )
        engine = slot.get()
        try:
            report, indexed = engine.index_staged(
                collection, ids, batch_size=settings.embed_batch_size, propagate=propagate
            )
        except Exception as exc:
            if last:  # no retry follows: the task log says why the task ended
                engine.tasks.finish(self.request.id, error=f"{type(exc).__name__}: {exc}")
            raise
        # A task sent without a task-log entry (a test, a script) records nothing.
        engine.tasks.record(self.request.id, ids, indexed=indexed, failed=report.not_written)
        engine.tasks.finish(self.request.id)
        if report.failed:
            log.warning(
                "%s: %d documents failed: %s",
                collection,
                len(report.failed),
                sorted(report.failed)[:10],
            )
        return report_dict(report)

    @app.task(name=DELETE_TASK, base=IndexTask, bind=True, shared=False, throws=expected, **retries)
    def delete_documents(self: Task, collection: str, doc_ids: list[str]) -> dict[str, Any]:
        """Delete documents from both indexes and the registry; ``{"deleted": [...]}``."""
        ids = check_doc_ids(doc_ids)
        return {"deleted": slot.get().collection(collection).indexer.delete(ids)}

    # No automatic retry: the next scheduled run is the retry.
    @app.task(
        name=RECONCILE_TASK,
        base=IndexTask,
        bind=True,
        shared=False,
        throws=(*expected, BackendUnavailable, RegistryError),
    )
    def reconcile_collections(self: Task, collection: str | None = None) -> dict[str, Any]:
        """Find and repair differences between registry and indexes, per collection."""
        engine = slot.get()
        reports: dict[str, Any] = {}
        for report in reconcile_all(engine, None if collection is None else [collection]):
            reports[report.collection] = report.to_dict()
            if report.total:
                log.warning("reconcile %s: %s", report.collection, reports[report.collection])
        return {"collections": reports}
