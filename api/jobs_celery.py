"""Indexing jobs on Celery index workers (``SIEVE_INDEX_BACKEND=celery``).

The same path as the embedded queue (``api.jobs.stage``): documents staged in
the registry and the task recorded before anything is sent; then one
``sieve.index_documents`` message with the ids, under the task's own id, and
the worker records each batch in the task log as it goes. If the broker is
down the task is closed with why, the request answers 503, and the staged
documents stay ``pending`` for the periodic reconcile.
"""

from __future__ import annotations

from typing import Any

from api.jobs import IndexJob, stage
from search.engine import SearchEngine
from search.errors import BackendUnavailable
from workers.index_client import IndexClient


class CeleryJobQueue:
    """``JobQueue`` over Celery: stage in the registry, then enqueue the ids."""

    def __init__(self, engine: SearchEngine, client: IndexClient) -> None:
        self.engine = engine
        self.client = client

    def submit(self, job: IndexJob) -> str:
        """Stage and record the job, then enqueue its ids; returns the task id."""
        task = stage(self.engine, job, self.engine.tasks)
        if task.state != "queued":
            return task.id  # nothing to index: a task that is already done
        ids = self.engine.tasks.pending(task.id, limit=task.total)
        try:
            self.client.enqueue_index(job.collection, ids, task_id=task.id)
        except BackendUnavailable as exc:
            self.engine.tasks.finish(task.id, error=str(exc))
            raise
        return task.id

    def get(self, task_id: str) -> dict[str, Any] | None:
        """The task as the API and the workers recorded it, or None when unknown."""
        task = self.engine.tasks.get(task_id)
        return None if task is None else task.to_dict()

    def depth(self) -> int:
        """Tasks accepted and not yet taken up by a worker, from the task log.

        Read from the registry's database, not the broker: ``/metrics`` reads it
        on every scrape and must not hang on a broker that does not answer.
        """
        return self.engine.tasks.depth()

    def close(self) -> None:
        """Nothing held open beyond the Celery app's pools."""
