"""Sieve's rerank task: a thin adapter around the engine's cross-encoder.

The indexing tasks (index, delete, reconcile) live in ``workers.indexing``;
``workers.app.celery_init_app`` registers both on the app it builds.

``sieve.rerank`` scores (query, passage) pairs with the process's
``CrossEncoderReranker``. Arguments and result are small JSON: strings in,
``{"scores": [[logit, start, end], ...], "model_ms", "model_key", "started_at"}`` out.

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

from celery import Celery
from celery.signals import worker_process_init

from search.config import Settings
from search.errors import ConfigError, ModelIncompatible, ModelNotFound, SieveError
from search.rerank import CrossEncoderReranker
from workers.delivery import DeadLettered, DeliveryLimitedTask
from workers.names import RERANK_TASK
from workers.settings import WorkerSettings

log = logging.getLogger(__name__)

# Errors of the model itself: the same on every delivery, so no traceback spam.
_MODEL_ERRORS = (ModelNotFound, ModelIncompatible, ConfigError)


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

    # shared=False: a shared task would be added to every app made later in this
    # process, bound to this app's settings.
    @app.task(
        name=RERANK_TASK,
        base=DeliveryLimitedTask,
        shared=False,
        throws=(*_MODEL_ERRORS, DeadLettered),
        # No STARTED state for this one: the reply carries ``started_at``, which
        # splits queue wait from run time per call, and the extra store and
        # pub/sub message cost 1-2.5 ms of a round trip measured in milliseconds.
        # (Long tasks keep the app's task_track_started=True.)
        track_started=False,
    )
    def rerank(query: str, passages: list[str]) -> dict[str, Any]:
        """Score ``passages`` against ``query``; one ``[logit, start, end]`` per passage."""
        # Wall clock (not perf_counter): the client compares it with its send time.
        started_at = time.time()
        reranker = slot.get()
        batch = reranker.rerank(query, passages)
        return {
            "scores": [[s.logit, s.start, s.end] for s in batch.scores],
            "model_ms": batch.timings_ms.get("model", 0.0),
            "model_key": reranker.model_key,
            "started_at": started_at,
        }
