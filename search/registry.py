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

The registry is checked, not assumed. A meta table holds its identity (a
random id written when the database is first created, which the indexes
record, see ``search.integrity``) and its schema version; opening runs
SQLite's ``PRAGMA quick_check``; and any database error that means damage
(SQLite's "malformed"/"not a database", PostgreSQL's XX001/XX002) becomes
``RegistryCorrupt`` wherever it happens, never a bare driver error.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
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
    and_,
    create_engine,
    delete,
    event,
    func,
    inspect,
    or_,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.engine.interfaces import ExceptionContext
from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from search.errors import BackendUnavailable, RegistryCorrupt, RegistryMismatch
from search.records import (
    BACKENDS,
    DocumentRecord,
    DocumentSummary,
    ListFilter,
    RegistryIdentity,
    Restored,
    Staged,
    content_hash,
)
from search.types import Document

__all__ = [
    "BACKENDS",
    "DocumentRecord",
    "Registry",
    "RegistryIdentity",
    "Restored",
    "Staged",
    "content_hash",
]

# The layout of these tables; a registry written by a newer layout is refused.
SCHEMA_VERSION = 1
_META_ID = "registry_id"
_META_SCHEMA = "schema_version"
# SQLite's primary result codes for a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB.
_SQLITE_DAMAGE = (11, 26)
# PostgreSQL's SQLSTATEs for damage: data_corrupted, index_corrupted.
_PG_DAMAGE = ("XX001", "XX002")


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


class _MetaRow(_Base):
    """One fact about the registry itself: its id, its schema version."""

    __tablename__ = "sieve_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)


class _CollectionRow(_Base):
    """A collection that exists explicitly (created through the API or by indexing)."""

    __tablename__ = "collections"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class _CollectionSettingRow(_Base):
    """A value stored with one collection (the rerank blend ``sieve calibrate`` chose).

    A table of its own, created where missing: a registry written before it
    existed opens unchanged, and an older Sieve ignores it.
    """

    __tablename__ = "collection_settings"

    collection: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


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


def _write_content(row: _DocumentRow, doc: Document, digest: str) -> None:
    """Copy what the registry stores of a document onto its row."""
    row.content_hash = digest
    row.title, row.text, row.source = doc.title, doc.text, doc.source
    row.content_type, row.meta = doc.content_type, dict(doc.metadata)


ID_BATCH = 500  # ids per IN (...) clause: well under every driver's parameter limit


def _id_batches(doc_ids: Sequence[str]) -> Iterator[list[str]]:
    ids = list(doc_ids)
    for start in range(0, len(ids), ID_BATCH):
        yield ids[start : start + ID_BATCH]


def _now() -> datetime:
    return datetime.now(UTC)


def _damage(exc: BaseException) -> bool:
    """Whether a driver error says the database itself is damaged (not merely unreachable)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _SQLITE_DAMAGE:
        return True
    return getattr(exc, "sqlstate", None) in _PG_DAMAGE


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


class Registry:
    """Registry over a SQLAlchemy URL. The engine is created, and checked, on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._identity: RegistryIdentity | None = None
        # Set when damage was seen: every later call fails fast with it until ``ping``
        # finds the database sound again (restored under a running process).
        self._broken: RegistryCorrupt | None = None
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        """The URL for messages, password hidden."""
        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine: tables created and the registry checked on first use."""
        broken = self._broken
        if broken is not None:
            raise RegistryCorrupt(broken.message, **broken.data)
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = self._connect()
        return self._engine

    @property
    def identity(self) -> RegistryIdentity:
        """This registry's id and schema version (connects on first use)."""
        self.engine  # noqa: B018 - connecting reads (or creates) the identity
        identity = self._identity
        assert identity is not None  # set by _connect
        return identity

    def _corrupt(self, why: str) -> RegistryCorrupt:
        return RegistryCorrupt(
            f"the registry at {self.location} is corrupt or unreadable ({why}); restore it "
            "from a backup, or rebuild it from the indexes with `sieve recover-registry`",
            url=self.location,
        )

    def _on_error(self, context: ExceptionContext) -> None:
        # The one place driver errors meaning damage become RegistryCorrupt, for
        # every statement and every connect, whichever method ran it.
        exc = context.original_exception
        if _damage(exc):
            error = self._corrupt(_one_line(exc))
            self._broken = error
            raise error from exc

    def _connect(self) -> Engine:
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if self.url.startswith("sqlite"):
            database = make_url(self.url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        engine = create_engine(self.url, **kwargs)
        event.listen(engine, "handle_error", self._on_error)
        if self.url.startswith("sqlite"):

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
                # WAL lets searches read while an indexing run writes.
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

        try:
            self._identity = self._open_schema(engine)
        except SQLAlchemyError as exc:
            engine.dispose()
            raise BackendUnavailable(
                f"registry at {self.location} unusable: {_one_line(exc)}", backend="registry"
            ) from exc
        except RegistryCorrupt as exc:
            self._broken = exc
            engine.dispose()
            raise
        except BaseException:
            engine.dispose()
            raise
        return engine

    def _open_schema(self, engine: Engine) -> RegistryIdentity:
        """Check the database, create what is missing, and read (or write) the identity."""
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                found = [str(row) for row in conn.exec_driver_sql("PRAGMA quick_check").scalars()]
                if found != ["ok"]:
                    raise self._corrupt("PRAGMA quick_check: " + "; ".join(found[:3]))
            tables = set(inspect(conn).get_table_names())
        try:
            _Base.metadata.create_all(engine)
        except (IntegrityError, ProgrammingError):
            # Another process (API, worker, migrate) created the tables at the same moment.
            _Base.metadata.create_all(engine)
        with Session(engine) as session:
            meta = {row.key: row.value for row in session.scalars(select(_MetaRow))}
        claimed = False
        if not meta:
            # A new database, or one written before the meta table existed.
            claimed = self._claim(engine, {_META_ID: uuid.uuid4().hex, _META_SCHEMA: "1"})
            with Session(engine) as session:
                meta = {row.key: row.value for row in session.scalars(select(_MetaRow))}
        if _META_ID not in meta or _META_SCHEMA not in meta:
            raise self._corrupt(f"its meta table lacks {_META_ID} or {_META_SCHEMA}")
        try:
            version = int(meta[_META_SCHEMA])
        except ValueError:
            raise self._corrupt(f"schema version {meta[_META_SCHEMA]!r} is not a number") from None
        if version != SCHEMA_VERSION:
            raise self._corrupt(
                f"schema version {version}; this Sieve reads schema {SCHEMA_VERSION}"
            )
        created = claimed and not tables & {"documents", "sieve_meta"}
        return RegistryIdentity(meta[_META_ID], version, created)

    @staticmethod
    def _claim(engine: Engine, values: dict[str, str]) -> bool:
        """Insert the meta rows unless another process did first; whether we did."""
        try:
            with Session(engine) as session, session.begin():
                session.add_all(_MetaRow(key=key, value=value) for key, value in values.items())
        except IntegrityError:
            return False
        return True

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
                _write_content(row, doc, digest)
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

    def list_documents(
        self, collection: str, after: str, limit: int, where: ListFilter | None = None
    ) -> list[DocumentSummary]:
        """Up to ``limit`` documents with ids after ``after``, in id order (no text read).

        ``where`` filters in the query itself (id prefix, state, metadata), so a
        filtered page costs what an unfiltered one does and ``after`` pages it.
        """
        columns = (
            _DocumentRow.doc_id, _DocumentRow.title, _DocumentRow.status,
            _DocumentRow.chunks, _DocumentRow.error, _DocumentRow.updated_at,
        )  # fmt: skip
        with self._session() as session:
            conditions = [_DocumentRow.collection == collection, _DocumentRow.doc_id > after]
            if where is not None:
                conditions.extend(_conditions(where, session.get_bind().dialect.name))
            stmt = select(*columns).where(*conditions).order_by(_DocumentRow.doc_id).limit(limit)
            return [DocumentSummary(*row) for row in session.execute(stmt)]

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

    def collection_setting(self, name: str, key: str) -> Any:
        """The value stored under ``key`` with collection ``name``; None when there is none."""
        with self._session() as session:
            row = session.get(_CollectionSettingRow, (name, key))
            return None if row is None else row.value

    def set_collection_setting(self, name: str, key: str, value: Any) -> None:
        """Store a JSON value under ``key`` with collection ``name`` (replacing any)."""
        with self._session() as session, session.begin():
            row = session.get(_CollectionSettingRow, (name, key))
            if row is None:
                session.add(
                    _CollectionSettingRow(collection=name, key=key, value=value, updated_at=_now())
                )
            else:
                row.value, row.updated_at = value, _now()

    def drop_collection(self, name: str) -> int:
        """Forget a collection, its documents and its settings; returns how many documents."""
        with self._session() as session, session.begin():
            result = session.execute(delete(_DocumentRow).where(_DocumentRow.collection == name))
            session.execute(delete(_CollectionRow).where(_CollectionRow.name == name))
            session.execute(
                delete(_CollectionSettingRow).where(_CollectionSettingRow.collection == name)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def set_identity(self, registry_id: str) -> None:
        """Take the id that existing indexes carry (``search.recover``); only while empty.

        Raises ``RegistryMismatch`` if the registry already holds documents: an id
        is never moved onto documents that another registry's indexes did not see.
        """
        if not registry_id or len(registry_id) > 64:
            raise ValueError(f"invalid registry id {registry_id!r}")
        with self._session() as session, session.begin():
            if session.scalar(select(_DocumentRow.doc_id).limit(1)) is not None:
                raise RegistryMismatch(
                    f"the registry at {self.location} holds documents; it keeps its id",
                    url=self.location,
                )
            row = session.get(_MetaRow, _META_ID)
            if row is None:
                session.add(_MetaRow(key=_META_ID, value=registry_id))
            else:
                row.value = registry_id
        identity = self.identity
        self._identity = RegistryIdentity(registry_id, identity.schema_version, identity.created)

    def restore(self, collection: str, items: Sequence[Restored]) -> int:
        """Write rebuilt documents with the versions the indexes hold; returns how many.

        A row of the same id is replaced. The content hash is computed from the
        rebuilt content, so a later upsert of the original (uncleaned) content
        counts as a change and is indexed again, at the next version.
        """
        if not items:
            return 0
        now = _now()
        with self._session() as session, session.begin():
            if session.get(_CollectionRow, collection) is None:
                session.add(_CollectionRow(name=collection, created_at=now))
            ids = [item.document.id for item in items]
            for batch in _id_batches(ids):
                session.execute(
                    delete(_DocumentRow).where(
                        _DocumentRow.collection == collection, _DocumentRow.doc_id.in_(batch)
                    )
                )
            for item in {item.document.id: item for item in items}.values():
                row = _DocumentRow(collection=collection, doc_id=item.document.id)
                _write_content(row, item.document, content_hash(item.document))
                row.version, row.chunks = item.version, item.chunks
                row.keyword_version, row.vector_version = item.keyword_version, item.vector_version
                row.error, row.updated_at = None, now
                row.status = "indexed" if _record(row).indexed else "pending"
                session.add(row)
        return len({item.document.id for item in items})

    def ping(self) -> None:
        """A cheap check that the registry is usable and still the one opened.

        Raises ``BackendUnavailable`` when the database cannot be reached,
        ``RegistryCorrupt`` when it is damaged (after damage was seen, this
        checks it afresh, ``PRAGMA quick_check`` included), and
        ``RegistryMismatch`` when its id changed under this process.
        """
        if self._broken is not None:
            with self._lock:
                self._broken = None
                engine, self._engine = self._engine, None
                if engine is not None:
                    engine.dispose()
        identity = self.identity
        try:
            with self._session() as session:
                stored = session.get(_MetaRow, _META_ID)
                session.execute(select(_DocumentRow.doc_id).limit(1))
        except SQLAlchemyError as exc:
            raise BackendUnavailable(
                f"registry unreachable: {_one_line(exc)}", backend="registry"
            ) from exc
        if stored is None or stored.value != identity.id:
            raise RegistryMismatch(
                f"the registry at {self.location} was replaced while Sieve ran (its id is "
                f"{stored.value if stored else 'gone'}, was {identity.id}); restart to check it "
                "against the indexes",
                url=self.location,
            )

    def close(self) -> None:
        """Dispose of pooled connections; the next use opens and checks the database afresh."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        self._identity = None
        self._broken = None


def _conditions(where: ListFilter, dialect: str) -> list[ColumnElement[bool]]:
    """The SQL of a listing filter; metadata compared by JSON type as well as value."""
    out: list[ColumnElement[bool]] = []
    if where.prefix:
        out.append(_DocumentRow.doc_id.startswith(where.prefix, autoescape=True))
    if where.status is not None:
        out.append(_DocumentRow.status == where.status)
    for key, values in where.metadata.items():
        out.append(or_(*(_meta_equals(key, value, dialect) for value in values)))
    return out


def _meta_equals(key: str, value: str, dialect: str) -> ColumnElement[bool]:
    """Whether metadata ``key`` is the scalar that ``value`` writes as a facet term.

    A string equals its text, an integer its decimal form, a boolean ``true`` or
    ``false`` (``search.types.facet_terms``). The JSON type is checked too, so
    ``"5"`` and ``5`` both match ``5`` but a float or an object never does.
    """
    element = _DocumentRow.meta[key]
    text = element.as_string()
    if dialect == "postgresql":
        kind = func.json_typeof(element)
        string, number, boolean = ["string"], ["number"], ["boolean"]
    else:  # SQLite's json_type: text, integer, real, true, false, null, object, array
        kind = func.json_type(_DocumentRow.meta, f'$."{key}"')
        string, number, boolean = ["text"], ["integer"], ["true", "false"]
    options = [and_(kind.in_(string), text == value)]
    if value.lstrip("-").isdigit() and str(int(value)) == value:
        # SQLite's json_extract hands an integer back as one: compare with one there.
        same = text == value if dialect == "postgresql" else element.as_integer() == int(value)
        options.append(and_(kind.in_(number), same))
    if value in ("true", "false"):
        if dialect == "postgresql":
            options.append(and_(kind.in_(boolean), text == value))
        else:
            options.append(kind == value)
    return or_(*options)
