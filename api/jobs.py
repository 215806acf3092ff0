"""Indexing tasks: the admin endpoints stage work durably, then answer 202 with a task id.

One path for both deployments: ``submit`` expands uploads, stages every document
in the registry (the outbox) and records a task over them (``search.jobs``)
before it returns, so an accepted job survives any crash. ``ThreadJobQueue``
runs the tasks on this process's ``JobRunner`` (the embedded default), which
resumes unfinished ones at start-up; the Celery queue (``api.jobs_celery``)
sends them to index workers. Task state lives in the registry's database, so a
task id answers after a restart and from any API replica.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from api.uploads import Upload, document_sizes, load_upload
from search.engine import SearchEngine
from search.errors import LoadError
from search.jobs import TaskLog, TaskRecord
from search.types import Document


@dataclass(frozen=True)
class IndexJob:
    """Documents to index into one collection: given as JSON, or as uploaded files."""

    collection: str
    documents: tuple[Document, ...] = ()
    files: tuple[Upload, ...] = ()
    # Lines about parts of uploads already read that gave no document (the task's errors).
    errors: tuple[str, ...] = ()

    def sizes(self) -> Iterator[tuple[str, int]]:
        """``(name, bytes)`` of every document it holds: text, file, or JSONL line."""
        for doc in self.documents:
            yield doc.id, len(doc.text.encode("utf-8"))
        for upload in self.files:
            yield from document_sizes(upload)


def expand(job: IndexJob) -> tuple[list[Document], list[str]]:
    """The job's documents, uploads read; unreadable files and lines become error lines."""
    documents = list(job.documents)
    errors = list(job.errors)
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


def stage(engine: SearchEngine, job: IndexJob, tasks: TaskLog) -> TaskRecord:
    """Expand the job, stage its documents in the registry, record its task (in that order)."""
    documents, errors = expand(job)
    engine.registry.add_collection(job.collection)
    staged = engine.registry.stage(job.collection, documents) if documents else []
    return tasks.create(job.collection, staged, errors)


class ThreadJobQueue:
    """Tasks run by this process's ``JobRunner``, which starts (and resumes) with the queue."""

    def __init__(self, engine: SearchEngine) -> None:
        self.engine = engine
        self.tasks = engine.tasks
        self.runner = engine.job_runner()

    def submit(self, job: IndexJob) -> str:
        """Stage ``job`` durably and wake the runner; returns its task id."""
        task = stage(self.engine, job, self.tasks)
        self.runner.wake()
        return task.id

    def get(self, task_id: str) -> dict[str, Any] | None:
        """The task as recorded, or None when unknown."""
        task = self.tasks.get(task_id)
        return None if task is None else task.to_dict()

    def depth(self) -> int:
        """Tasks accepted but not started."""
        return self.tasks.depth()

    def close(self) -> None:
        """Nothing of its own: the engine owns the runner (``SearchEngine.close`` stops it)."""
