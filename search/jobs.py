"""Indexing jobs as durable tasks: accepted work is on disk before it is acknowledged.

An accepted job is a task row plus one item row per document to index, written
in the registry's database right after the documents themselves are staged
there (the outbox), and before the API answers 202. Whatever runs the job (the
in-process ``JobRunner`` or a Celery index worker) reads the items from here,
indexes them through ``Indexer.index_registered`` (idempotent: a document
already at its registry version in both indexes is skipped), and marks each
batch done. A process killed at any point leaves the task ``queued`` or
``running`` with its remaining items; the next start resumes it, and a task id
answers after a restart.

Counts are derived from the item rows, not incremented, so a batch recorded
twice (a redelivered Celery task) counts once.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Boolean, Float, Integer, String, Text, func, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from search.registry import Registry, Staged

STATES = ("queued", "running", "done", "failed")
UNFINISHED = ("queued", "running")
MAX_ERRORS = 1000  # per task: a file of bad lines must not grow a task without bound


class _Base(DeclarativeBase):
    """Declarative base of the task tables (beside the registry's own)."""


class _TaskRow(_Base):
    __tablename__ = "index_tasks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    collection: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), index=True)
    total: Mapped[int] = mapped_column(Integer, default=0)  # documents accepted
    unchanged: Mapped[int] = mapped_column(Integer, default=0)  # needed no indexing
    errors: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of lines
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class _ItemRow(_Base):
    __tablename__ = "index_task_items"

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    doc_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    done: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    indexed: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    done_at: Mapped[float | None] = mapped_column(Float, nullable=True)


@dataclass(frozen=True)
class TaskRecord:
    """One indexing task as ``GET /v1/tasks/{id}`` shows it."""

    id: str
    collection: str
    state: str
    total: int
    processed: int
    indexed: int
    unchanged: int
    failed: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    created_at: float = 0.0
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


class TaskLog:
    """Tasks and their items in the registry's database (SQLite or PostgreSQL)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._ready = False

    def _session(self) -> Session:
        engine = self.registry.engine
        if not self._ready:
            _Base.metadata.create_all(engine)
            self._ready = True
        return Session(engine, expire_on_commit=False)

    def create(
        self, collection: str, staged: Sequence[Staged], errors: Sequence[str] = ()
    ) -> TaskRecord:
        """A new task over staged documents; those already indexed count as unchanged."""
        todo = list(dict.fromkeys(s.document.id for s in staged if s.needs_indexing))
        now = time.time()
        row = _TaskRow(
            id=uuid.uuid4().hex,
            collection=collection,
            state="queued" if todo else "done",
            total=len(staged),
            unchanged=len(staged) - len(todo),
            errors=json.dumps(list(errors)[:MAX_ERRORS]),
            created_at=now,
            finished_at=None if todo else now,
        )
        with self._session() as session, session.begin():
            session.add(row)
            session.add_all(_ItemRow(task_id=row.id, doc_id=doc_id) for doc_id in todo)
        task = self.get(row.id)
        assert task is not None
        return task

    def get(self, task_id: str) -> TaskRecord | None:
        """The task, its counts derived from its items; None when unknown."""
        with self._session() as session:
            row = session.get(_TaskRow, task_id)
            if row is None:
                return None
            items = session.execute(
                select(_ItemRow.doc_id, _ItemRow.done, _ItemRow.indexed, _ItemRow.error).where(
                    _ItemRow.task_id == task_id
                )
            ).all()
        failed = {doc_id: error for doc_id, done, _, error in items if done and error}
        return TaskRecord(
            id=row.id,
            collection=row.collection,
            state=row.state,
            total=row.total,
            processed=row.unchanged + sum(1 for item in items if item.done),
            indexed=sum(1 for item in items if item.indexed),
            unchanged=row.unchanged
            + sum(1 for item in items if item.done and not item.indexed and not item.error),
            failed=failed,
            errors=json.loads(row.errors),
            created_at=row.created_at,
            finished_at=row.finished_at,
        )

    def unfinished(self) -> list[TaskRecord]:
        """Tasks queued or running, oldest first (what a restart resumes)."""
        with self._session() as session:
            ids = list(
                session.scalars(
                    select(_TaskRow.id)
                    .where(_TaskRow.state.in_(UNFINISHED))
                    .order_by(_TaskRow.created_at, _TaskRow.id)
                )
            )
        return [task for task in (self.get(i) for i in ids) if task is not None]

    def pending(self, task_id: str, limit: int) -> list[str]:
        """Up to ``limit`` of the task's documents not yet done, in a stable order."""
        with self._session() as session:
            return list(
                session.scalars(
                    select(_ItemRow.doc_id)
                    .where(_ItemRow.task_id == task_id, _ItemRow.done.is_(False))
                    .order_by(_ItemRow.doc_id)
                    .limit(limit)
                )
            )

    def record(
        self,
        task_id: str,
        doc_ids: Sequence[str],
        *,
        indexed: Collection[str],
        failed: Mapping[str, str],
    ) -> None:
        """Mark a batch done: each document indexed, failed (with why), or neither
        (deleted meanwhile); the task is running from then on."""
        now = time.time()
        with self._session() as session, session.begin():
            for doc_id in doc_ids:
                session.execute(
                    update(_ItemRow)
                    .where(_ItemRow.task_id == task_id, _ItemRow.doc_id == doc_id)
                    .values(
                        done=True,
                        indexed=doc_id in indexed and doc_id not in failed,
                        error=failed.get(doc_id),
                        done_at=now,
                    )
                )
            session.execute(
                update(_TaskRow)
                .where(_TaskRow.id == task_id, _TaskRow.state == "queued")
                .values(state="running")
            )

    def finish(self, task_id: str, *, error: str | None = None) -> None:
        """Close the task: ``done``, or ``failed`` with ``error`` added to its lines."""
        with self._session() as session, session.begin():
            row = session.get(_TaskRow, task_id)
            if row is None:
                return
            if error is not None:
                lines = json.loads(row.errors)
                row.errors = json.dumps([*lines, error][:MAX_ERRORS])
            row.state = "failed" if error is not None else "done"
            row.finished_at = time.time()

    def remaining(self, task_id: str) -> int:
        """How many of the task's documents are not done yet."""
        with self._session() as session:
            count = session.scalar(
                select(func.count())
                .select_from(_ItemRow)
                .where(_ItemRow.task_id == task_id, _ItemRow.done.is_(False))
            )
        return int(count or 0)

    def done_at(self, task_id: str) -> list[float]:
        """When each done item of the task was recorded (for fairness checks), sorted."""
        with self._session() as session:
            stamps = session.scalars(
                select(_ItemRow.done_at).where(
                    _ItemRow.task_id == task_id, _ItemRow.done_at.is_not(None)
                )
            )
            return sorted(float(s) for s in stamps if s is not None)

    def depth(self) -> int:
        """Tasks waiting to start."""
        with self._session() as session:
            count = session.scalar(
                select(func.count()).select_from(_TaskRow).where(_TaskRow.state == "queued")
            )
        return int(count or 0)
