"""Indexing tasks: the admin endpoints queue work here and answer 202 at once.

``JobQueue`` is the small interface the views use; ``ThreadJobQueue`` is the
embedded implementation (an in-process thread pool, task state in memory with
a bounded history). The distributed mode can put a Celery implementation
behind the same three methods: an ``IndexJob`` is plain data (documents and
uploaded files), the kind of thing a task message carries.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from api.uploads import Upload, load_upload
from search.engine import SearchEngine
from search.errors import LoadError
from search.types import Document

log = logging.getLogger(__name__)

MAX_ERRORS = 1000  # per task: a file of bad lines must not grow a task without bound


@dataclass(frozen=True)
class IndexJob:
    """Documents to index into one collection: given as JSON, or as uploaded files."""

    collection: str
    documents: tuple[Document, ...] = ()
    files: tuple[Upload, ...] = ()


@dataclass
class Task:
    """The state of one job, as ``GET /v1/tasks/{id}`` shows it."""

    id: str
    collection: str
    state: str = "queued"  # queued | running | done | failed
    total: int = 0
    processed: int = 0
    indexed: int = 0
    unchanged: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "id": self.id,
            "collection": self.collection,
            "state": self.state,
            "total": self.total,
            "processed": self.processed,
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "failed": dict(self.failed),
            "errors": list(self.errors),
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }


def expand(job: IndexJob) -> tuple[list[Document], list[str]]:
    """The job's documents, uploads read; unreadable files and lines become error lines."""
    documents = list(job.documents)
    errors: list[str] = []
    for upload in job.files:
        for item in load_upload(upload):
            if isinstance(item, LoadError):
                errors.append(str(item))
            else:
                documents.append(item)
    return documents, errors


class JobQueue(Protocol):
    """Where the admin endpoints send indexing work."""

    def submit(self, job: IndexJob) -> str:
        """Queue a job; returns its task id at once."""
        ...

    def get(self, task_id: str) -> dict[str, Any] | None:
        """A snapshot of the task, or None when unknown (or forgotten)."""
        ...

    def depth(self) -> int:
        """How many jobs wait to start."""
        ...


class ThreadJobQueue:
    """Jobs on a thread pool of this process; the last ``history`` finished tasks are kept.

    One worker by default: the embedded indexes take one writer at a time
    anyway, and jobs then run in the order they were accepted.
    """

    def __init__(self, engine: SearchEngine, *, workers: int = 1, history: int = 500) -> None:
        self.engine = engine
        self.history = history
        self._tasks: OrderedDict[str, Task] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sieve-index")

    def submit(self, job: IndexJob) -> str:
        """Queue ``job``; returns its task id."""
        task = Task(id=uuid.uuid4().hex, collection=job.collection, total=len(job.documents))
        with self._lock:
            self._tasks[task.id] = task
            self._forget_old()
        self._pool.submit(self._run, task, job)
        return task.id

    def get(self, task_id: str) -> dict[str, Any] | None:
        """A snapshot, taken under the lock so counts are consistent."""
        with self._lock:
            task = self._tasks.get(task_id)
            return None if task is None else task.to_dict()

    def depth(self) -> int:
        """Jobs accepted but not started."""
        with self._lock:
            return sum(task.state == "queued" for task in self._tasks.values())

    def close(self) -> None:
        """Stop accepting work; running jobs finish, queued ones are dropped."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _forget_old(self) -> None:
        finished = [t.id for t in self._tasks.values() if t.state in ("done", "failed")]
        for task_id in finished[: max(0, len(self._tasks) - self.history)]:
            del self._tasks[task_id]

    def _update(self, task: Task, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(task, name, value)

    def _run(self, task: Task, job: IndexJob) -> None:
        self._update(task, state="running")
        try:
            documents, errors = expand(job)
            self._update(task, total=len(documents), errors=errors[:MAX_ERRORS])

            def progress(count: int) -> None:
                with self._lock:
                    task.processed += count

            report = self.engine.index(
                documents, job.collection, batch_size=16, on_progress=progress
            )
            self._update(
                task,
                indexed=report.indexed,
                unchanged=report.unchanged,
                failed=dict(report.failed),
                state="done",
                finished_at=time.time(),
            )
        except Exception as exc:  # a failed job is reported in its task (and logged), not lost
            log.exception("indexing task %s failed", task.id)
            with self._lock:
                task.errors.append(f"{type(exc).__name__}: {exc}")
                task.state = "failed"
                task.finished_at = time.time()
