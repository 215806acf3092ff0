"""``IndexClient``: the sending side of the indexing jobs (the API's Celery job queue uses it).

Stage first (``Registry.stage``), enqueue second: if sending fails
(``BackendUnavailable(backend="broker")``) the documents stay ``pending`` and the
periodic reconcile indexes them. Sending fails fast: at once when the broker
refuses connections, after ``ENQUEUE_TIMEOUT_S`` when it does not answer
(``workers.bounded``; such a send may still land later, which an idempotent
index job tolerates). The tasks themselves are in ``workers.indexing``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from search.errors import BackendUnavailable
from workers.bounded import BoundedCalls, DeadlinePassed
from workers.indexing import check_doc_ids
from workers.names import DELETE_TASK, INDEX_TASK
from workers.settings import ENQUEUE_TIMEOUT_S, WorkerSettings

# The broker is unreachable (kombu wraps most of redis-py's errors).
_BROKER_ERRORS = (OperationalError, redis.ConnectionError, redis.TimeoutError, OSError)


class IndexClient:
    """Sends index and delete jobs to the index queue through ``app``.

    ``app`` comes from ``workers.app.celery_init_app``; this holds it and never
    builds one. Thread-safe (Celery's producer pool is).
    """

    def __init__(self, app: Celery, workers: WorkerSettings) -> None:
        self.app = app
        self.queue = workers.index_queue
        self._calls = BoundedCalls("sieve-enqueue", max_workers=4)

    def enqueue_index(
        self, collection: str, doc_ids: Sequence[str], *, task_id: str | None = None
    ) -> str:
        """Send ``sieve.index_documents`` for documents already staged in the registry.

        ``task_id``: the id of its task in the task log (``search.jobs``), so the
        worker records its progress there. Returns the task id.
        """
        return self._send(INDEX_TASK, collection, doc_ids, task_id)

    def enqueue_delete(self, collection: str, doc_ids: Sequence[str]) -> str:
        """Send ``sieve.delete_documents``; returns the task id."""
        return self._send(DELETE_TASK, collection, doc_ids)

    def _send(
        self, name: str, collection: str, doc_ids: Sequence[str], task_id: str | None = None
    ) -> str:
        from search.engine import check_collection

        check_collection(collection)
        ids = check_doc_ids(doc_ids)
        send = partial(
            self.app.send_task, name, args=(collection, ids), queue=self.queue, task_id=task_id
        )
        try:
            result = self._calls.run(send, time.monotonic() + ENQUEUE_TIMEOUT_S)
        except DeadlinePassed as exc:
            raise BackendUnavailable(
                f"could not enqueue {name}: the broker did not answer within "
                f"{ENQUEUE_TIMEOUT_S:g} s", backend="broker", reason="timeout",
            ) from exc
        except _BROKER_ERRORS as exc:
            raise BackendUnavailable(
                f"could not enqueue {name}: broker unreachable: {exc}", backend="broker"
            ) from exc
        return str(result.id)

    def close(self) -> None:
        """Stop the sending threads (a send in flight ends at its socket timeout)."""
        self._calls.close()
