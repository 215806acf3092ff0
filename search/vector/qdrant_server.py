"""A Qdrant server (or qdrant-client's local mode) as the vector index.

The same point layout as Qdrant Edge (the record of ``search.store.codec``), so
the two are interchangeable. Local mode (``SIEVE_QDRANT_PATH``) is qdrant-client's
pure-Python brute-force store: fine for tests and small deployments; it has no
HNSW and ignores payload indexes and search params (and warns about them), so
neither is sent to it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from search.batching import batched
from search.config import Settings
from search.errors import BackendUnavailable, ConfigError
from search.store import (
    DocFilter,
    UpsertResult,
    check_batch,
    decode_chunk,
    decode_hit,
    decode_version,
    delete_documents,
    encode_chunk,
    highest_versions,
    replace_chunks,
)
from search.types import Chunk, Filters, ScoredChunk, filter_terms
from search.vector.base import check_vectors, chunk_version

BACKEND = "qdrant"
_WRITE_BATCH = 256  # points per request: a 384-d batch is ~0.5 MB of JSON
_SCROLL_PAGE = 1_024
# Other processes write to a server too, so the point count used to choose exact
# search is re-read after this long; a stale count only shifts that choice a little.
_COUNT_TTL_S = 30.0
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    ResponseHandlingException,
    UnexpectedResponse,
    httpx.HTTPError,
    grpc.RpcError,
)


class QdrantServerIndex:
    """A ``VectorIndex`` in the collection ``<prefix>-<collection>`` of a Qdrant.

    The collection is created on first use. Writes wait for the server to apply
    them. Queries are exact below ``settings.exact_search_threshold`` points and
    HNSW (``hnsw_ef``, at least ``top_k``) above it.
    """

    name = BACKEND

    def __init__(self, settings: Settings, dim: int, collection: str = "default") -> None:
        """Remember the settings; no connection is made until first use."""
        self.settings = settings
        self.dim = dim
        self.collection = f"{settings.qdrant_collection_prefix}-{collection}"
        self.local = bool(settings.qdrant_path)
        self._lock = threading.RLock()
        self._client: QdrantClient | None = None
        self._ready = False  # the collection is known to exist with our dimension
        self._count: tuple[float, int] | None = None  # (monotonic time read, points)

    # -- writes ------------------------------------------------------------

    def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> UpsertResult:
        """Replace every point of the documents in ``chunks``; older writes refused.

        Points are written first (deterministic ids overwrite in place), then the
        documents' other points are deleted, so a document never disappears from
        searches while it is being replaced. Other processes can write to a
        server between the version check and the write; the registry's own
        check (``search.indexing``) right before it keeps that window small.
        """
        values = check_vectors(self.dim, vectors)
        check_batch(chunks, values)
        if not chunks:
            return UpsertResult()
        with self._calls("upsert") as client:
            result = replace_chunks(_Collection(client, self.collection), chunks, values)
        self._count = None
        return result

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """Remove every point of these documents. Unknown ids are ignored."""
        if not doc_ids:
            return
        with self._calls("delete") as client:
            delete_documents(_Collection(client, self.collection), doc_ids)
        self._count = None

    def clear(self) -> None:
        """Delete the collection; it is created again, empty, on next use."""
        with self._calls("clear", ensure=False) as client:
            client.delete_collection(self.collection)
        self._ready = False
        self._count = None

    def close(self) -> None:
        """Close the client (and release local mode's folder lock)."""
        with self._lock:
            client, self._client = self._client, None
            self._ready = False
            if client is not None:
                client.close()

    # -- reads -------------------------------------------------------------

    def search(
        self, vector: Sequence[float], top_k: int, filters: Filters | None = None
    ) -> list[ScoredChunk]:
        """Nearest chunks by cosine similarity, best first, filters applied in the search."""
        exact = self._approximate_count() < self.settings.exact_search_threshold
        return self._query(vector, top_k, filters, exact=exact)

    def exact_search(
        self, vector: Sequence[float], top_k: int, filters: Filters | None = None
    ) -> list[ScoredChunk]:
        """Like ``search`` but always brute force: the ground truth for recall checks."""
        return self._query(vector, top_k, filters, exact=True)

    def count(self) -> int:
        """Number of points stored (an exact count)."""
        with self._calls("count") as client:
            total = client.count(self.collection, exact=True).count
        self._count = (time.monotonic(), total)
        return total

    def doc_versions(self) -> dict[str, int]:
        """Every document id in the index with the (highest) version its points carry."""
        with self._calls("scroll") as client:
            return _Collection(client, self.collection).stored_versions(None)

    def chunk_versions(self, doc_id: str) -> dict[str, int]:
        """The point (chunk) ids stored for ``doc_id``, with their versions."""
        found = models.Filter(must=[_doc_condition([doc_id])])
        out: dict[str, int] = {}
        offset: Any = None
        with self._calls("scroll") as client:
            while True:
                records, offset = client.scroll(
                    self.collection,
                    scroll_filter=found,
                    limit=_SCROLL_PAGE,
                    offset=offset,
                    with_payload=["chunk_id", "version"],
                )
                out.update(chunk_version(r.payload, r.id) for r in records)
                if offset is None:
                    return out

    def iter_chunks(self) -> Iterator[Chunk]:
        """Every stored chunk (vectors aside), in no order: to rebuild a lost registry."""
        offset: Any = None
        with self._calls("scroll") as client:
            while True:
                records, offset = client.scroll(
                    self.collection, limit=_SCROLL_PAGE, offset=offset, with_payload=True
                )
                for record in records:
                    yield decode_chunk(record.payload or {}, stored_id=record.id)
                if offset is None:
                    return

    def get_meta(self, key: str) -> str | None:
        """A value kept in the collection's metadata (Qdrant 1.16+); None when unset."""
        with self._calls("get collection") as client:
            metadata = client.get_collection(self.collection).config.metadata or {}
        value = metadata.get(key)
        return None if value is None else str(value)

    def set_meta(self, key: str, value: str) -> None:
        """Keep ``value`` under ``key`` in the collection's metadata (merged with the rest)."""
        with self._calls("update collection") as client:
            client.update_collection(self.collection, metadata={key: value})

    # -- internals ---------------------------------------------------------

    def _query(
        self, vector: Sequence[float], top_k: int, filters: Filters | None, *, exact: bool
    ) -> list[ScoredChunk]:
        if top_k < 1:
            return []
        (query,) = check_vectors(self.dim, [vector])
        params = None
        if not self.local:
            hnsw_ef = None if exact else max(self.settings.hnsw_ef, top_k)
            params = models.SearchParams(hnsw_ef=hnsw_ef, exact=exact)
        with self._calls("search") as client:
            response = client.query_points(
                self.collection,
                query=query,
                limit=top_k,
                query_filter=_facet_filter(filters),
                search_params=params,
                with_payload=True,
            )
        return [decode_hit(p.payload, p.score, stored_id=p.id) for p in response.points]

    def _approximate_count(self) -> int:
        cached = self._count
        if cached is not None and time.monotonic() - cached[0] < _COUNT_TTL_S:
            return cached[1]
        with self._calls("search") as client:
            total = client.count(self.collection, exact=False).count
        self._count = (time.monotonic(), total)
        return total

    @contextmanager
    def _calls(self, action: str, *, ensure: bool = True) -> Iterator[QdrantClient]:
        """The client (collection ensured), with transport errors as ``BackendUnavailable``."""
        try:
            client = self._connect()
            if ensure and not self._ready:
                with self._lock:
                    if not self._ready:
                        self._ensure_collection(client)
                        self._ready = True
            yield client
        except _TRANSPORT_ERRORS as exc:
            # The collection may have been dropped behind our back: check again next time.
            self._ready = False
            raise BackendUnavailable(
                f"qdrant {action} on {self.collection} failed: {_describe(exc)}",
                backend=BACKEND,
                collection=self.collection,
            ) from exc

    def _connect(self) -> QdrantClient:
        with self._lock:
            if self._client is None:
                if self.local:
                    try:
                        self._client = QdrantClient(path=self.settings.qdrant_path)
                    except RuntimeError as exc:  # the folder is locked by another client
                        raise BackendUnavailable(
                            f"qdrant local mode at {self.settings.qdrant_path}: {_describe(exc)}",
                            backend=BACKEND,
                        ) from exc
                else:
                    self._client = QdrantClient(
                        url=self.settings.qdrant_url,
                        api_key=self.settings.qdrant_api_key or None,
                        timeout=max(1, math.ceil(self.settings.qdrant_timeout_s)),
                    )
            return self._client

    def _ensure_collection(self, client: QdrantClient) -> None:
        if client.collection_exists(self.collection):
            self._check_dim(client)
            return
        try:
            client.create_collection(
                self.collection,
                vectors_config=models.VectorParams(size=self.dim, distance=models.Distance.COSINE),
                hnsw_config=models.HnswConfigDiff(
                    m=self.settings.hnsw_m, ef_construct=self.settings.hnsw_ef_construct
                ),
            )
        except UnexpectedResponse as exc:
            if exc.status_code != 409:  # 409: another process created it first
                raise
            self._check_dim(client)
        # Local mode ignores payload indexes (and warns); a server needs them for
        # fast delete-by-doc and filtered search. Creating one again is a no-op.
        if not self.local:
            for field in ("doc_id", "facets"):
                client.create_payload_index(
                    self.collection, field, models.PayloadSchemaType.KEYWORD, wait=True
                )

    def _check_dim(self, client: QdrantClient) -> None:
        vectors = client.get_collection(self.collection).config.params.vectors
        size = vectors.size if isinstance(vectors, models.VectorParams) else None
        if size != self.dim:
            raise ConfigError(
                f"Qdrant collection {self.collection} has vectors of dimension {size} "
                f"but the embedder produces {self.dim}; rebuild the collection to change the model",
                collection=self.collection,
                expected=self.dim,
                stored=size,
            )


class _Collection:
    """The chunk-store primitives (``search.store.ChunkStore``) on one collection."""

    def __init__(self, client: QdrantClient, collection: str) -> None:
        self.client, self.collection = client, collection

    def stored_versions(self, doc_ids: Sequence[str] | None) -> dict[str, int]:
        """As the protocol says; ``None``: of every document in the collection."""
        found = None if doc_ids is None else models.Filter(must=[_doc_condition(doc_ids)])
        pairs: list[tuple[str, int]] = []
        offset: Any = None
        while True:
            records, offset = self.client.scroll(
                self.collection,
                scroll_filter=found,
                limit=_SCROLL_PAGE,
                offset=offset,
                with_payload=["doc_id", "version"],
            )
            pairs.extend(decode_version(record.payload) for record in records)
            if offset is None:
                return highest_versions(pairs)

    def put(self, chunks: Sequence[Chunk], extras: Sequence[list[float]]) -> dict[str, int]:
        points = [
            models.PointStruct(id=chunk.id, vector=vector, payload=encode_chunk(chunk))
            for chunk, vector in zip(chunks, extras, strict=True)
        ]
        for batch in batched(points, _WRITE_BATCH):
            self.client.upsert(self.collection, points=list(batch), wait=True)
        return {}

    def delete(self, where: DocFilter) -> None:
        must: list[models.Condition] = [_doc_condition(where.doc_ids)]
        if where.at_most is not None:
            must.append(models.FieldCondition(key="version", range=models.Range(lte=where.at_most)))
        keep: list[models.ExtendedPointId] = sorted(where.keep)
        must_not: list[models.Condition] | None = (
            [models.HasIdCondition(has_id=keep)] if keep else None
        )
        doomed = models.Filter(must=must, must_not=must_not)
        self.client.delete(self.collection, models.FilterSelector(filter=doomed), wait=True)


def _doc_condition(doc_ids: Sequence[str]) -> models.FieldCondition:
    return models.FieldCondition(key="doc_id", match=models.MatchAny(any=list(doc_ids)))


def _facet_filter(filters: Filters | None) -> models.Filter | None:
    """Every clause must match one of its ``key=value`` terms (see ``filter_terms``)."""
    clauses = filter_terms(filters)
    if not clauses:
        return None
    return models.Filter(
        must=[
            models.FieldCondition(key="facets", match=models.MatchAny(any=terms))
            for terms in clauses
        ]
    )


def _describe(exc: BaseException) -> str:
    """One line about a transport error, with the server's reason when there is one."""
    if isinstance(exc, UnexpectedResponse):
        body = exc.content.decode("utf-8", "replace")
        text = f"HTTP {exc.status_code} {exc.reason_phrase}: {body}"
    elif isinstance(exc, ResponseHandlingException):
        text = f"{type(exc.source).__name__}: {exc.source}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:300]
