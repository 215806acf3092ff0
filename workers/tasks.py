"""Sieve's rerank task: a thin adapter around the engine's cross-encoder.

The indexing tasks (index, delete, reconcile) live in ``workers.indexing``;
``workers.app.celery_init_app`` registers both on the app it builds.

``sieve.rerank`` scores (query, passage) pairs with the process's
``CrossEncoderReranker``. Arguments and result are small JSON: strings (and the
caller's ``deadline_at``, a wall-clock epoch) in,
``{"scores": [[logit, start, end], ...], "unread", "model_ms", "read_ms", "model_key",
"started_at"}`` out. An indexed passage comes as a reference instead of text
(``refs``: collection, chunk id, digest) and is read here from the shared chunk
store (``workers.passages``); one that cannot be read is scored None and listed
in ``unread``, and the client sends it again as text.

Work nobody waits for is dropped, not finished: a task whose ``deadline_at`` has
passed when it starts is not run, and one running when it passes stops at the
next step (the cross-encoder checks between slices of passages it tokenises and
between batches). Either fails with ``RerankExpired`` (logged in one line, no
traceback: it is expected) and is counted in the broker's Redis, in the hash
``sieve:rerank:expired``: field ``queued`` (dropped before it ran, by this check
or by Celery's own ``expires`` check when the worker received it) and
``running`` (stopped mid-run).

The model loads once per worker process, in ``worker_process_init`` (after the
fork: CUDA cannot be initialised before a fork and used after it), and only in
workers that consume the rerank queue. Importing this module imports neither
torch nor transformers. A model that cannot be loaded does not stop the worker:
the process starts, logs why, and every rerank task fails with that error
(``ModelNotFound``'s message, say), which the client turns into "degraded".
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import weakref
from typing import Any

import redis
from celery import Celery
from celery.signals import task_revoked, worker_process_init

from search.config import Settings
from search.errors import (
    BackendUnavailable,
    ConfigError,
    ModelIncompatible,
    ModelNotFound,
    SieveError,
)
from search.rerank import CrossEncoderReranker
from workers.delivery import DeadLettered, DeliveryLimitedTask
from workers.names import RERANK_TASK
from workers.passages import PassageReader, parse_refs
from workers.settings import WorkerSettings

log = logging.getLogger(__name__)

# Errors of the model itself: the same on every delivery, so no traceback spam.
_MODEL_ERRORS = (ModelNotFound, ModelIncompatible, ConfigError)
# Rerank tasks dropped because their deadline had passed: HINCRBY "queued" / "running".
EXPIRED_KEY = "sieve:rerank:expired"


class RerankExpired(SieveError):
    """A rerank task's deadline passed before or while it ran: dropped, not finished."""

    code = "expired"


def count_expired(task: DeliveryLimitedTask, stage: str) -> None:
    """Add one to ``EXPIRED_KEY``'s ``stage`` field; a Redis error costs only the count."""
    try:
        task._redis().hincrby(EXPIRED_KEY, stage, 1)
    except redis.RedisError as exc:
        log.warning("could not count an expired rerank task: %s", exc)


@task_revoked.connect
def _count_expired_on_receipt(sender: Any = None, expired: bool = False, **_: Any) -> None:
    # Celery's own expiry check, in the worker's main process, when a task arrives
    # after its ``expires``: it never reaches the task body.
    if expired and getattr(sender, "name", None) == RERANK_TASK:
        count_expired(sender, "queued")


class ModelSlot:
    """The one reranker of a worker process, loaded once (after the fork)."""

    def __init__(self, app: Celery, settings: Settings, queue: str) -> None:
        self.app = app
        self.settings = settings
        self.queue = queue  # the rerank queue: only its workers load the model early
        self._reranker: CrossEncoderReranker | None = None
        self._error: SieveError | None = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load and warm up the model, or remember why it cannot be; at most once."""
        with self._lock:
            if self._reranker is not None or self._error is not None:
                return
            reranker = CrossEncoderReranker.from_settings(self.settings)
            started = time.perf_counter()
            try:
                reranker.warm_up()
            except _MODEL_ERRORS as exc:
                # Stay up: a worker that exits here is restarted and fails again,
                # in a loop; one that answers "model not found" lets clients degrade.
                self._error = exc
                log.error("reranker not loaded, rerank tasks will fail: %s", exc)
                return
            self._reranker = reranker
            log.info(
                "reranker %s loaded in %.2f s", reranker.model_key, time.perf_counter() - started
            )

    def get(self) -> CrossEncoderReranker:
        """The loaded reranker; raises the load error (a fresh copy) if there was one."""
        # Loads on first use where no worker_process_init came (solo and thread pools).
        self.load()
        if self._error is not None:
            raise copy.copy(self._error)
        assert self._reranker is not None  # load() set one or the other
        return self._reranker


# Every slot made in this process; the signal handler loads those whose app's
# worker consumes the rerank queue. Weak: a client process that makes apps
# (and never forks pool processes) must not keep them alive through here.
_slots: weakref.WeakSet[ModelSlot] = weakref.WeakSet()


@worker_process_init.connect
def _load_after_fork(**_: Any) -> None:
    for slot in list(_slots):
        if _consumes(slot.app, slot.queue):
            slot.load()


def _consumes(app: Celery, queue: str) -> bool:
    # The worker's --queues selection is made before the pool forks; with no
    # selection ``consume_from`` is every declared queue.
    return queue in app.amqp.queues.consume_from


def register_rerank_task(app: Celery, settings: Settings, workers: WorkerSettings) -> None:
    """Add ``sieve.rerank`` to ``app`` (``workers.app.celery_init_app`` calls this)."""
    slot = ModelSlot(app, settings, workers.rerank_queue)
    _slots.add(slot)
    reader = PassageReader(settings)  # opens nothing until a task brings refs

    # shared=False: a shared task would be added to every app made later in this
    # process, bound to this app's settings.
    @app.task(
        name=RERANK_TASK,
        base=DeliveryLimitedTask,
        bind=True,
        shared=False,
        throws=(*_MODEL_ERRORS, DeadLettered, RerankExpired),
        # No STARTED state for this one: the reply carries ``started_at``, which
        # splits queue wait from run time per call, and the extra store and
        # pub/sub message cost 1-2.5 ms of a round trip measured in milliseconds.
        # (Long tasks keep the app's task_track_started=True.)
        track_started=False,
    )
    def rerank(
        self: DeliveryLimitedTask,
        query: str,
        passages: list[str | None],
        deadline_at: float | None = None,
        max_doc_tokens: int | None = None,
        refs: list[list[str] | None] | None = None,
    ) -> dict[str, Any]:
        """Score ``passages`` against ``query``; one ``[logit, start, end]`` per passage.

        ``deadline_at`` (wall-clock epoch): when the caller stops waiting;
        ``max_doc_tokens``: how much of each passage is scored (the reranker's default);
        ``refs``: per passage, ``[collection, chunk_id, digest]`` to read it from the
        chunk store (its text is then None), or None. A referenced passage that
        cannot be read is scored None and its position listed in ``unread``.
        """
        # Wall clock (not perf_counter): the client compares it with its send time.
        started_at = time.time()
        deadline = None
        if deadline_at is not None:
            left = float(deadline_at) - started_at
            if left <= 0:
                raise _expired(self, "queued", f"{-left:.3f} s before it started", passages)
            deadline = time.monotonic() + left
        reranker = slot.get()
        read_started = time.perf_counter()
        texts = list(passages)
        if refs is not None:
            for position, text in enumerate(reader.read(parse_refs(refs, len(passages)))):
                if text is not None:
                    texts[position] = text
        read_ms = (time.perf_counter() - read_started) * 1000
        known = [i for i, text in enumerate(texts) if text is not None]
        unread = [i for i, text in enumerate(texts) if text is None]
        try:
            batch = reranker.rerank(
                query,
                [str(texts[i]) for i in known],
                deadline=deadline,
                max_doc_tokens=max_doc_tokens,
            )
        except BackendUnavailable as exc:
            if deadline is None or exc.data.get("reason") not in ("deadline", "busy"):
                raise
            raise _expired(self, "running", f"while it ran ({exc})", passages) from exc
        rows: list[list[float] | None] = [None] * len(texts)
        for position, s in zip(known, batch.scores, strict=True):
            rows[position] = [s.logit, s.start, s.end]
        return {
            "scores": rows,
            "unread": unread,
            "model_ms": batch.timings_ms.get("model", 0.0),
            "read_ms": read_ms,
            "model_key": reranker.model_key,
            "started_at": started_at,
            "tokens": batch.tokens,
        }


def _expired(
    task: DeliveryLimitedTask, stage: str, when: str, passages: list[str | None]
) -> RerankExpired:
    count_expired(task, stage)
    return RerankExpired(
        f"rerank task {task.request.id} dropped: its deadline passed {when}",
        stage=stage,
        passages=len(passages),
    )
