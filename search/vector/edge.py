"""Qdrant Edge: Qdrant's own storage and HNSW engine, in-process, persisted in one folder.

How it indexes (measured with qdrant-edge-py 0.9):

* Writes land in an appendable segment with a plain (brute-force) index. Nothing
  runs in the background: HNSW graphs are built only by ``EdgeShard.optimize()``,
  which turns every segment above ``indexing_threshold`` KB into an HNSW segment,
  vacuums deleted points and opens a fresh appendable segment. It holds the GIL
  throughout (seconds for 10k x 384-d), as queries do. Hence ``optimize()`` is
  public (the indexer calls it after a bulk load) and ``upsert`` also runs it
  once ``auto_optimize_after`` points have been written since the last run.
* ``full_scan_threshold`` is frozen into a segment when it is built, so it is set
  low (the size of ``_INDEX_MIN_POINTS`` vectors, like the indexing threshold) and
  the exact-versus-HNSW choice is made per query from ``exact_search_threshold``,
  which any reopen may change. A filter matching fewer points than that is still
  answered exactly from the payload index, which is faster too.
* The shard locks its write-ahead log: one process (one index object) per folder.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from search.batching import batched
from search.errors import BackendUnavailable, ConfigError, IndexLocked, SieveError
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

BACKEND = "qdrant-edge"
# Segments with at least this many vectors get an HNSW graph at ``optimize()``;
# below it a full scan takes well under a millisecond and a graph would not pay.
_INDEX_MIN_POINTS = 1_000
_WRITE_BATCH = 512  # points per update call: bounds the Python -> Rust conversion in memory
_SCROLL_PAGE = 1_024


class QdrantEdgeIndex:
    """A ``VectorIndex`` in a Qdrant Edge shard at ``path`` (created on first use).

    Queries are exact below ``exact_search_threshold`` points and HNSW
    (``hnsw_ef``, at least ``top_k``) at or above it. Filters run inside the
    search. Writes are flushed before they return.
    """

    name = BACKEND

    def __init__(
        self,
        path: Path,
        dim: int,
        *,
        exact_search_threshold: int = 20_000,
        hnsw_ef: int = 256,
        hnsw_m: int = 16,
        hnsw_ef_construct: int = 200,
        auto_optimize_after: int | None = None,
    ) -> None:
        """Remember the settings; nothing touches the disk until first use.

        ``auto_optimize_after``: run ``optimize()`` inside ``upsert`` once this
        many points were written or deleted since the last run; ``None`` means
        ``exact_search_threshold`` (below that many points queries are exact, so
        a graph over the backlog would not be used yet); ``0`` turns it off.
        """
        self.path = Path(path)
        self.dim = dim
        self.exact_search_threshold = exact_search_threshold
        self.hnsw_ef = hnsw_ef
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construct = hnsw_ef_construct
        self.auto_optimize_after = (
            max(exact_search_threshold, _INDEX_MIN_POINTS)
            if auto_optimize_after is None
            else auto_optimize_after
        )
        self._lock = threading.RLock()
        self._shard: qe.EdgeShard | None = None
        # Only this process can have the shard open (WAL lock), and every write
        # goes through this object, so a count cached after each write stays exact.
        self._points = 0
        self._backlog = 0  # points written or deleted since the last optimize()

    # -- writes ------------------------------------------------------------

    def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> UpsertResult:
        """Replace every point of the documents in ``chunks``; older writes refused.

        New points are written first (ids are deterministic, so existing ones are
        overwritten in place), then the documents' other points are pruned: a
        concurrent search never sees a document vanish, only, for an instant,
        its old surplus chunks. The version check runs under the lock, and
        every write to this shard goes through this object (the WAL lock), so
        nothing newer can land between the check and the write.
        """
        values = check_vectors(self.dim, vectors)
        check_batch(chunks, values)
        if not chunks:
            return UpsertResult()
        with self._lock, _engine_errors("upsert"):
            shard = self._open()
            result = replace_chunks(_Shard(shard), chunks, values)
            shard.flush()
            self._points = shard.info().points_count
            # Overwritten points leave deleted copies behind: they count as backlog too.
            written = set(result.written)
            self._backlog += sum(1 for chunk in chunks if chunk.doc_id in written)
            if self.auto_optimize_after and self._backlog >= self.auto_optimize_after:
                self._optimize(shard)
            return result

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """Remove every point of these documents. Unknown ids are ignored."""
        if not doc_ids:
            return
        with self._lock, _engine_errors("delete"):
            shard = self._open()
            before = self._points
            delete_documents(_Shard(shard), doc_ids)
            shard.flush()
            self._points = shard.info().points_count
            self._backlog += before - self._points

    def optimize(self) -> bool:
        """Build HNSW graphs for segments that need one and vacuum deleted points.

        Blocks (and holds the GIL) until done. Call it at the end of a bulk load.
        Returns whether anything was rebuilt.
        """
        with self._lock, _engine_errors("optimize"):
            return self._optimize(self._open())

    def clear(self) -> None:
        """Remove everything: the shard folder is deleted and recreated on next use."""
        with self._lock:
            self.close()
            shutil.rmtree(self.path, ignore_errors=True)
            self._points = 0
            self._backlog = 0

    def close(self) -> None:
        """Flush and release the shard (and its WAL lock). Reopened by the next call."""
        with self._lock:
            shard, self._shard = self._shard, None
            if shard is not None:
                with _engine_errors("close"):
                    shard.flush()
                    shard.close()

    # -- reads -------------------------------------------------------------

    def search(
        self, vector: Sequence[float], top_k: int, filters: Filters | None = None
    ) -> list[ScoredChunk]:
        """Nearest chunks by cosine similarity, best first, filters applied in the search."""
        shard = self._open()
        exact = self._points < self.exact_search_threshold
        return self._query(shard, vector, top_k, filters, exact=exact)

    def exact_search(
        self, vector: Sequence[float], top_k: int, filters: Filters | None = None
    ) -> list[ScoredChunk]:
        """Like ``search`` but always brute force: the ground truth for recall checks."""
        return self._query(self._open(), vector, top_k, filters, exact=True)

    def count(self) -> int:
        """Number of points stored."""
        self._open()
        return self._points

    def doc_versions(self) -> dict[str, int]:
        """Every document id in the index with the (highest) version its points carry."""
        shard = self._open()
        with _engine_errors("scroll"):
            return _Shard(shard).stored_versions(None)

    def chunk_versions(self, doc_id: str) -> dict[str, int]:
        """The point (chunk) ids stored for ``doc_id``, with their versions."""
        shard = self._open()
        found = qe.Filter(must=[_doc_condition([doc_id])])
        fields = qe.PayloadSelector.Include(["chunk_id", "version"])
        out: dict[str, int] = {}
        offset: Any = None
        with _engine_errors("scroll"):
            while True:
                request = qe.ScrollRequest(
                    offset=offset, limit=_SCROLL_PAGE, filter=found, with_payload=fields
                )
                records, offset = shard.scroll(request)
                out.update(chunk_version(r.payload, r.id) for r in records)
                if offset is None:
                    return out

    def iter_chunks(self) -> Iterator[Chunk]:
        """Every stored chunk (vectors aside), in no order: to rebuild a lost registry."""
        shard = self._open()
        offset: Any = None
        with _engine_errors("scroll"):
            while True:
                request = qe.ScrollRequest(offset=offset, limit=_SCROLL_PAGE, with_payload=True)
                records, offset = shard.scroll(request)
                for record in records:
                    yield decode_chunk(record.payload or {}, stored_id=record.id)
                if offset is None:
                    return

    def stats(self) -> dict[str, int]:
        """Points, HNSW-indexed vectors and segments, as the engine reports them."""
        shard = self._open()
        with _engine_errors("info"):
            info = shard.info()
        return {
            "points": info.points_count,
            "indexed_vectors": info.indexed_vectors_count,
            "segments": info.segments_count,
        }

    # -- internals ---------------------------------------------------------

    def _query(
        self,
        shard: qe.EdgeShard,
        vector: Sequence[float],
        top_k: int,
        filters: Filters | None,
        *,
        exact: bool,
    ) -> list[ScoredChunk]:
        if top_k < 1:
            return []
        (query,) = check_vectors(self.dim, [vector])
        if exact:
            params = qe.SearchParams(exact=True)
        else:
            # An ef below top_k would cap the result list; a larger ef buys recall.
            params = qe.SearchParams(hnsw_ef=max(self.hnsw_ef, top_k))
        request = qe.SearchRequest(
            query=qe.Query.Nearest(query),
            limit=top_k,
            filter=_facet_filter(filters),
            params=params,
            with_payload=True,
        )
        with _engine_errors("search"):
            points = shard.search(request)
        # Cosine distance: Qdrant normalises the vectors, the score is the cosine similarity.
        return [decode_hit(p.payload, p.score, stored_id=p.id) for p in points]

    def _open(self) -> qe.EdgeShard:
        shard = self._shard
        if shard is not None:
            return shard
        with self._lock:
            if self._shard is None:
                with _engine_errors("open"):
                    self._shard = self._load_or_create()
                    self._points = self._shard.info().points_count
            return self._shard

    def _load_or_create(self) -> qe.EdgeShard:
        config = self._config()
        segments = self.path / "segments"
        if segments.is_dir() and any(segments.iterdir()):
            stored = _stored_dim(self.path)
            if stored is not None and stored != self.dim:
                raise _dim_mismatch(self.path, stored, self.dim)
            try:
                # Passing the config checks it against the segments and saves the
                # new HNSW/optimizer settings for segments built from now on.
                shard = qe.EdgeShard.load(str(self.path), config)
            except Exception as exc:
                if type(exc) is Exception and "ncompatible" in str(exc):  # distance, layout
                    raise _dim_mismatch(self.path, stored, self.dim, str(exc)) from exc
                raise
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            shard = qe.EdgeShard.create(str(self.path), config)
        # Keyword indexes: doc_id for delete-by-filter, facets for filtered search.
        # doc_id is never searched on, so it gets no extra HNSW links.
        schema = shard.info().payload_schema
        if "doc_id" not in schema:
            params = qe.KeywordIndexParams(enable_hnsw=False)
            shard.update(qe.UpdateOperation.create_field_index("doc_id", params))
        if "facets" not in schema:
            keyword = qe.PayloadSchemaType.Keyword
            shard.update(qe.UpdateOperation.create_field_index("facets", keyword))
        return shard

    def _config(self) -> qe.EdgeConfig:
        # KB of float32 vectors, rounded so that a segment of exactly _INDEX_MIN_POINTS qualifies.
        threshold_kb = max(1, (_INDEX_MIN_POINTS - 1) * self.dim * 4 // 1024)
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=self.dim, distance=qe.Distance.Cosine),
            hnsw_config=qe.HnswIndexConfig(
                m=self.hnsw_m, ef_construct=self.hnsw_ef_construct, full_scan_threshold=threshold_kb
            ),
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=threshold_kb),
        )

    def _optimize(self, shard: qe.EdgeShard) -> bool:
        changed = shard.optimize()
        shard.flush()
        self._points = shard.info().points_count
        self._backlog = 0
        return changed


class _Shard:
    """The chunk-store primitives (``search.store.ChunkStore``) on an open shard."""

    def __init__(self, shard: qe.EdgeShard) -> None:
        self.shard = shard

    def stored_versions(self, doc_ids: Sequence[str] | None) -> dict[str, int]:
        """As the protocol says; ``None``: of every document in the shard."""
        found = None if doc_ids is None else qe.Filter(must=[_doc_condition(doc_ids)])
        fields = qe.PayloadSelector.Include(["doc_id", "version"])
        pairs: list[tuple[str, int]] = []
        offset: Any = None
        while True:
            request = qe.ScrollRequest(
                offset=offset, limit=_SCROLL_PAGE, filter=found, with_payload=fields
            )
            records, offset = self.shard.scroll(request)
            pairs.extend(decode_version(record.payload) for record in records)
            if offset is None:
                return highest_versions(pairs)

    def put(self, chunks: Sequence[Chunk], extras: Sequence[list[float]]) -> dict[str, int]:
        points = [
            qe.Point(chunk.id, vector, encode_chunk(chunk))
            for chunk, vector in zip(chunks, extras, strict=True)
        ]
        for batch in batched(points, _WRITE_BATCH):
            self.shard.update(qe.UpdateOperation.upsert_points(list(batch)))
        return {}

    def delete(self, where: DocFilter) -> None:
        must: list[Any] = [_doc_condition(where.doc_ids)]
        if where.at_most is not None:
            must.append(qe.FieldCondition(key="version", range=qe.RangeFloat(lte=where.at_most)))
        keep: set[qe.PointId] = set(where.keep)
        must_not: list[Any] | None = [qe.HasIdCondition(point_ids=keep)] if keep else None
        doomed = qe.Filter(must=must, must_not=must_not)
        self.shard.update(qe.UpdateOperation.delete_points_by_filter(doomed))


def _doc_condition(doc_ids: Sequence[str]) -> qe.FieldCondition:
    return qe.FieldCondition(key="doc_id", match=qe.MatchAny(any=list(doc_ids)))


def _facet_filter(filters: Filters | None) -> qe.Filter | None:
    """Every clause must match one of its ``key=value`` terms (see ``filter_terms``)."""
    clauses = filter_terms(filters)
    if not clauses:
        return None
    return qe.Filter(
        must=[qe.FieldCondition(key="facets", match=qe.MatchAny(any=terms)) for terms in clauses]
    )


def _stored_dim(path: Path) -> int | None:
    """The vector size recorded in the shard's ``edge_config.json``, if readable."""
    try:
        config = json.loads((path / "edge_config.json").read_text(encoding="utf-8"))
        return int(config["vectors"][""]["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _dim_mismatch(path: Path, stored: int | None, dim: int, detail: str = "") -> ConfigError:
    found = f"dimension {stored}" if stored is not None else " ".join(detail.split())[:200]
    return ConfigError(
        f"the vector index at {path} has {found} but the embedder produces dimension {dim}; "
        "rebuild the collection to change the model",
        path=str(path),
        expected=dim,
        stored=stored,
    )


@contextmanager
def _engine_errors(action: str) -> Iterator[None]:
    """Turn the engine's errors into ``BackendUnavailable`` with a one-line message.

    qdrant_edge raises plain ``Exception`` for every engine failure (I/O, a
    locked WAL, a closed shard); anything more specific is a bug here and
    propagates unchanged.
    """
    try:
        yield
    except SieveError:
        raise
    except Exception as exc:
        if type(exc) is not Exception:
            raise
        text = " ".join(str(exc).split())[:300]
        if "WouldBlock" in text:
            # The WAL's file lock: another process (or index object) owns the folder.
            message = (
                f"qdrant-edge {action} failed: the shard is open in another process or index "
                f"object (its write-ahead log is locked: {text})"
            )
            raise IndexLocked(message, backend=BACKEND) from exc
        message = f"qdrant-edge {action} failed: {text}"
        raise BackendUnavailable(message, backend=BACKEND) from exc
