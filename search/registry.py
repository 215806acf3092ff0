"""The document registry: the source of truth for what is indexed.

One row per (collection, document): its current version, content hash, the
text and metadata (so either index can be rebuilt from the registry alone),
and per-backend state (which version each index holds). SQLite through
SQLAlchemy by default; the same code runs on PostgreSQL by changing the URL.

A document is recorded here before anything is written to an index (the
outbox): a crash between the two leaves a ``pending`` row that a retry or the
reconciler finishes, never a silent loss.

The ORM rows stay in this module: every public method returns frozen
``DocumentRecord``s or plain values, so no caller holds a session-bound object
or writes SQL.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from search.errors import BackendUnavailable
from search.types import Document

BACKENDS = ("keyword", "vector")


class _Base(DeclarativeBase):
    """Declarative base of the registry tables."""


class _DocumentRow(_Base):
    """One document of one collection."""

    __tablename__ = "documents"

    collection: Mapped[str] = mapped_column(String(128), primary_key=True)
    doc_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    title: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    content_type: Mapped[str] = mapped_column(String(16), default="text")
    source: Mapped[str] = mapped_column(Text, default="")
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    # pending: recorded, not yet in both indexes; indexed; failed (see error).
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    keyword_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    vector_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class _CollectionRow(_Base):
    """A collection that exists explicitly (created through the API or by indexing)."""

    __tablename__ = "collections"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class DocumentRecord:
    """One document as the registry holds it: content and per-backend indexing state."""

    collection: str
    id: str
    version: int
    content_hash: str
    title: str
    text: str
    metadata: Mapping[str, Any]
    content_type: str
    source: str
    # pending: recorded, not yet in both indexes; indexed; failed (see error).
    status: str
    # The version each index holds (None: never written there).
    keyword_version: int | None
    vector_version: int | None
    chunks: int
    error: str | None
    updated_at: datetime

    def behind(self) -> tuple[str, ...]:
        """The backends (of ``BACKENDS``) that do not hold the current version.

        The one home of the version rule: a document is fully indexed when
        every backend holds its current version.
        """
        held = {"keyword": self.keyword_version, "vector": self.vector_version}
        return tuple(backend for backend in BACKENDS if held[backend] != self.version)

    @property
    def indexed(self) -> bool:
        """Whether both indexes hold the current version (whatever ``status`` says)."""
        return not self.behind()

    def document(self) -> Document:
        """The ``Document`` this record stores."""
        return Document(
            id=self.id,
            text=self.text,
            title=self.title,
            metadata=dict(self.metadata),
            source=self.source,
            content_type=self.content_type,
        )


def _record(row: _DocumentRow) -> DocumentRecord:
    return DocumentRecord(
        collection=row.collection,
        id=row.doc_id,
        version=row.version,
        content_hash=row.content_hash,
        title=row.title,
        text=row.text,
        # A copy behind a read-only view: nothing reaches the row through it.
        metadata=MappingProxyType(dict(row.meta or {})),
        content_type=row.content_type,
        source=row.source,
        status=row.status,
        keyword_version=row.keyword_version,
        vector_version=row.vector_version,
        chunks=row.chunks,
        error=row.error,
        updated_at=row.updated_at,
    )


@dataclass(frozen=True)
class Staged:
    """A document recorded in the registry and what indexing it needs."""

    document: Document
    version: int
    # False when the content is unchanged and both indexes already hold it.
    needs_indexing: bool


def content_hash(doc: Document) -> str:
    """Hash of everything that changes what the indexes hold for a document."""
    payload = json.dumps(
        [doc.title, doc.text, doc.content_type, dict(doc.metadata)],
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


ID_BATCH = 500  # ids per IN (...) clause: well under every driver's parameter limit


def _id_batches(doc_ids: Sequence[str]) -> Iterator[list[str]]:
    ids = list(doc_ids)
    for start in range(0, len(ids), ID_BATCH):
        yield ids[start : start + ID_BATCH]


def _now() -> datetime:
    return datetime.now(UTC)


class Registry:
    """Registry over a SQLAlchemy URL. The engine is created on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, tables created on first use."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = self._connect()
        return self._engine

    def _connect(self) -> Engine:
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if self.url.startswith("sqlite"):
            database = make_url(self.url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        engine = create_engine(self.url, **kwargs)
        if self.url.startswith("sqlite"):

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
                # WAL lets searches read while an indexing run writes.
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

        try:
            _Base.metadata.create_all(engine)
        except SQLAlchemyError as exc:
            raise BackendUnavailable(
                f"registry at {self.url} unusable: {exc}", backend="registry"
            ) from exc
        return engine

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def stage(self, collection: str, docs: Sequence[Document]) -> list[Staged]:
        """Record documents durably and say which need indexing.

        An unchanged document already in both indexes is a no-op. A changed one
        gets the next version. The last of duplicate ids in one batch wins.
        """
        latest = {doc.id: doc for doc in docs}
        staged: list[Staged] = []
        with self._session() as session, session.begin():
            rows = {
                row.doc_id: row
                for row in session.scalars(
                    select(_DocumentRow).where(
                        _DocumentRow.collection == collection,
                        _DocumentRow.doc_id.in_(list(latest)),
                    )
                )
            }
            for doc in latest.values():
                digest = content_hash(doc)
                row = rows.get(doc.id)
                if row is None:
                    row = _DocumentRow(collection=collection, doc_id=doc.id, version=1)
                    session.add(row)
                elif row.content_hash == digest:
                    done = _record(row).indexed
                    staged.append(Staged(doc, row.version, needs_indexing=not done))
                    continue
                else:
                    row.version += 1
                row.content_hash = digest
                row.title, row.text, row.source = doc.title, doc.text, doc.source
                row.content_type, row.meta = doc.content_type, dict(doc.metadata)
                row.status, row.error, row.updated_at = "pending", None, _now()
                staged.append(Staged(doc, row.version, needs_indexing=True))
        return staged

    def mark_indexed(
        self, collection: str, doc_id: str, version: int, backends: Sequence[str], chunks: int
    ) -> None:
        """Record that ``backends`` now hold ``version`` of the document."""
        with self._session() as session, session.begin():
            row = session.get(_DocumentRow, (collection, doc_id))
            if row is None or row.version != version:
                return  # deleted or superseded meanwhile: the newer write wins
            for backend in backends:
                setattr(row, f"{backend}_version", version)
            row.chunks = chunks
            if _record(row).indexed:
                row.status, row.error = "indexed", None
            row.updated_at = _now()

    def mark_failed(self, collection: str, doc_id: str, version: int, error: str) -> None:
        """Record why a document could not be indexed; its old chunks stay searchable."""
        with self._session() as session, session.begin():
            row = session.get(_DocumentRow, (collection, doc_id))
            if row is None or row.version != version:
                return
            row.status, row.error, row.updated_at = "failed", error[:2000], _now()

    def get(self, collection: str, doc_id: str) -> DocumentRecord | None:
        """One document's record, or None."""
        with self._session() as session:
            row = session.get(_DocumentRow, (collection, doc_id))
            return None if row is None else _record(row)

    def existing(self, collection: str, doc_ids: Sequence[str]) -> list[str]:
        """The subset of ``doc_ids`` that the registry knows."""
        if not doc_ids:
            return []
        with self._session() as session:
            stmt = select(_DocumentRow.doc_id).where(
                _DocumentRow.collection == collection, _DocumentRow.doc_id.in_(list(doc_ids))
            )
            return list(session.scalars(stmt))

    def delete(self, collection: str, doc_ids: Sequence[str]) -> int:
        """Remove rows; returns how many existed. Call after the indexes are cleaned."""
        if not doc_ids:
            return 0
        with self._session() as session, session.begin():
            result = session.execute(
                delete(_DocumentRow).where(
                    _DocumentRow.collection == collection, _DocumentRow.doc_id.in_(list(doc_ids))
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def stats(self, collection: str) -> dict[str, int]:
        """Document counts by status, plus the total and chunk count."""
        with self._session() as session:
            stmt = (
                select(
                    _DocumentRow.status,
                    func.count(),
                    func.coalesce(func.sum(_DocumentRow.chunks), 0),
                )
                .where(_DocumentRow.collection == collection)
                .group_by(_DocumentRow.status)
            )
            out = {"documents": 0, "chunks": 0, "pending": 0, "indexed": 0, "failed": 0}
            for status, count, chunks in session.execute(stmt):
                out[status] = int(count)
                out["documents"] += int(count)
                out["chunks"] += int(chunks)
            return out

    def versions(self, collection: str, doc_ids: Sequence[str] | None = None) -> dict[str, int]:
        """Document ids with their current version: all of the collection, or of ``doc_ids``.

        Reads only (id, version), never the stored text.
        """
        with self._session() as session:
            if doc_ids is None:
                stmt = select(_DocumentRow.doc_id, _DocumentRow.version).where(
                    _DocumentRow.collection == collection
                )
                return {doc_id: version for doc_id, version in session.execute(stmt)}
            out: dict[str, int] = {}
            for ids in _id_batches(doc_ids):
                stmt = select(_DocumentRow.doc_id, _DocumentRow.version).where(
                    _DocumentRow.collection == collection, _DocumentRow.doc_id.in_(ids)
                )
                out.update((doc_id, version) for doc_id, version in session.execute(stmt))
            return out

    def records(self, collection: str, doc_ids: Sequence[str]) -> dict[str, DocumentRecord]:
        """The records of ``doc_ids`` that exist (absent ids left out), a few queries in all."""
        out: dict[str, DocumentRecord] = {}
        with self._session() as session:
            for ids in _id_batches(doc_ids):
                stmt = select(_DocumentRow).where(
                    _DocumentRow.collection == collection, _DocumentRow.doc_id.in_(ids)
                )
                out.update((row.doc_id, _record(row)) for row in session.scalars(stmt))
        return out

    def iter_documents(self, collection: str, batch: int = 500) -> Iterator[tuple[Document, int]]:
        """Every stored document with its version, in id order (for rebuilds)."""
        last = ""
        while True:
            with self._session() as session:
                records = [
                    _record(row)
                    for row in session.scalars(
                        select(_DocumentRow)
                        .where(_DocumentRow.collection == collection, _DocumentRow.doc_id > last)
                        .order_by(_DocumentRow.doc_id)
                        .limit(batch)
                    )
                ]
            if not records:
                return
            for record in records:
                yield record.document(), record.version
            last = records[-1].id

    def collections(self) -> list[str]:
        """Names of collections that have at least one document."""
        with self._session() as session:
            return list(session.scalars(select(_DocumentRow.collection).distinct()))

    def add_collection(self, name: str) -> bool:
        """Record a collection; False when it was already recorded."""
        with self._session() as session, session.begin():
            if session.get(_CollectionRow, name) is not None:
                return False
            session.add(_CollectionRow(name=name, created_at=_now()))
        return True

    def collection_names(self) -> list[str]:
        """Every known collection, sorted: recorded ones and any that hold documents.

        Documents indexed before the collections table existed still count, so
        an upgrade loses nothing.
        """
        with self._session() as session:
            recorded = set(session.scalars(select(_CollectionRow.name)))
            recorded.update(session.scalars(select(_DocumentRow.collection).distinct()))
        return sorted(recorded)

    def has_collection(self, name: str) -> bool:
        """Whether the collection is recorded or holds documents."""
        with self._session() as session:
            if session.get(_CollectionRow, name) is not None:
                return True
            stmt = select(_DocumentRow.doc_id).where(_DocumentRow.collection == name).limit(1)
            return session.scalar(stmt) is not None

    def drop_collection(self, name: str) -> int:
        """Forget a collection and its documents; returns how many documents it had."""
        with self._session() as session, session.begin():
            result = session.execute(delete(_DocumentRow).where(_DocumentRow.collection == name))
            session.execute(delete(_CollectionRow).where(_CollectionRow.name == name))
            return int(getattr(result, "rowcount", 0) or 0)

    def ping(self) -> None:
        """One round trip to the database; raises ``BackendUnavailable`` when it fails."""
        try:
            with self._session() as session:
                session.execute(select(1))
        except SQLAlchemyError as exc:
            raise BackendUnavailable(f"registry unreachable: {exc}", backend="registry") from exc

    def close(self) -> None:
        """Dispose of pooled connections."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
