"""Indexing jobs on Celery index workers (``SIEVE_INDEX_BACKEND=celery``).

The API records every document in the registry first (the outbox: durable
before anything else happens), then sends one ``sieve.index_documents`` task
with the ids. If the broker is down the documents stay ``pending`` and the
periodic reconcile indexes them. What only the API knows about a job (its
total, the lines of an upload that could not be read) is kept next to the
task in the broker's Redis, so any API replica can answer ``GET /v1/tasks/{id}``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from api.jobs import MAX_ERRORS, IndexJob, expand
from search.engine import SearchEngine
from workers.index_client import IndexClient

JOB_KEY = "sieve:job:{}"
JOB_TTL_S = 7 * 24 * 3600
STATES = {
    "PENDING": "queued",
    "RECEIVED": "queued",
    "STARTED": "running",
    "RETRY": "running",
    "SUCCESS": "done",
    "FAILURE": "failed",
    "REVOKED": "failed",
}


class CeleryJobQueue:
    """``JobQueue`` over Celery: stage in the registry, then enqueue the ids."""

    def __init__(self, engine: SearchEngine, client: IndexClient) -> None:
        self.engine = engine
        self.client = client
        self.app = client.app

    def _redis(self) -> Any:
        return self.app.backend.client

    def submit(self, job: IndexJob) -> str:
        """Record the documents, enqueue their ids; returns the task id."""
        documents, errors = expand(job)
        staged = self.engine.registry.stage(job.collection, documents) if documents else []
        todo = [s.document.id for s in staged if s.needs_indexing]
        task_id = self.client.enqueue_index(job.collection, todo) if todo else ""
        task_id = task_id or uuid.uuid4().hex  # nothing to do: a task that is already done
        meta = {
            "collection": job.collection,
            "total": len(staged),
            "unchanged": len(staged) - len(todo),
            "errors": errors[:MAX_ERRORS],
            "enqueued": bool(todo),
            "created_at": time.time(),
        }
        self._redis().set(JOB_KEY.format(task_id), json.dumps(meta), ex=JOB_TTL_S)
        return task_id

    def get(self, task_id: str) -> dict[str, Any] | None:
        """The task as ``GET /v1/tasks/{id}`` shows it, or None when unknown."""
        raw = self._redis().get(JOB_KEY.format(task_id))
        if raw is None:
            return None
        meta = json.loads(raw)
        out: dict[str, Any] = {
            "id": task_id,
            "collection": meta["collection"],
            "state": "done",
            "total": meta["total"],
            "processed": meta["unchanged"],
            "indexed": 0,
            "unchanged": meta["unchanged"],
            "failed": {},
            "errors": list(meta["errors"]),
            "created_at": meta["created_at"],
            "finished_at": None,
        }
        if not meta["enqueued"]:
            return out
        result = self.app.AsyncResult(task_id)
        out["state"] = STATES.get(result.state, "running")
        if result.state == "SUCCESS" and isinstance(result.result, dict):
            report = result.result
            out["indexed"] = int(report.get("indexed", 0))
            out["unchanged"] += int(report.get("skipped", 0))
            out["failed"] = dict(report.get("failed", {}))
            out["processed"] = out["total"]
        elif result.state == "FAILURE":
            out["errors"].append(f"{type(result.result).__name__}: {result.result}")
        return out

    def depth(self) -> int:
        """Index tasks waiting in the broker's queue."""
        return int(self._redis().llen(self.client.queue))

    def close(self) -> None:
        """Nothing held open beyond the Celery app's pools."""
