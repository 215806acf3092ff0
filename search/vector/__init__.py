"""The vector leg: the ``VectorIndex`` contract, a factory, and the payload both Qdrants share.

Both implementations store one point per chunk with the same payload, so an
index can move between Qdrant Edge (embedded) and a Qdrant server without any
other module noticing. Implementations are imported lazily: a deployment that
uses the server never loads the 35 MB Qdrant Edge extension, and vice versa.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from search.errors import ConfigError
from search.types import Chunk, ScoredChunk
from search.vector.base import VectorIndex

if TYPE_CHECKING:
    from search.config import Settings

__all__ = [
    "VectorIndex",
    "batched",
    "check_vectors",
    "chunk_payload",
    "open_vector_index",
    "scored_chunk",
]

T = TypeVar("T")


def open_vector_index(settings: Settings, collection: str, dim: int) -> VectorIndex:
    """The configured vector index of ``collection`` (opened lazily on first use).

    ``settings.vector_backend`` picks the engine: ``"qdrant-edge"`` keeps the
    shard under ``data_dir/collections/<collection>/qdrant-edge``; ``"qdrant"``
    talks to a server (``qdrant_url``) or to qdrant-client's local mode
    (``qdrant_path``).
    """
    if settings.vector_backend == "qdrant-edge":
        from search.vector.edge import QdrantEdgeIndex

        return QdrantEdgeIndex(
            settings.data_dir / "collections" / collection / "qdrant-edge",
            dim,
            exact_search_threshold=settings.exact_search_threshold,
            hnsw_ef=settings.hnsw_ef,
            hnsw_m=settings.hnsw_m,
            hnsw_ef_construct=settings.hnsw_ef_construct,
        )
    if settings.vector_backend == "qdrant":
        from search.vector.qdrant_server import QdrantServerIndex

        return QdrantServerIndex(settings, dim, collection)
    # Settings validates the name; this only guards a new backend added there but not here.
    raise ConfigError(
        f"no vector index implementation for SIEVE_VECTOR_BACKEND={settings.vector_backend!r}",
        value=settings.vector_backend,
    )


def chunk_payload(chunk: Chunk) -> dict[str, Any]:
    """The payload stored with a chunk's point (the same in every Qdrant)."""
    return {
        "doc_id": chunk.doc_id,
        "chunk_id": chunk.id,
        "text": chunk.text,
        "title": chunk.title,
        "start": chunk.start,
        "end": chunk.end,
        "ordinal": chunk.ordinal,
        "version": chunk.version,
        # A keyword array: a filter clause is "any of these terms", clauses are ANDed.
        "facets": list(chunk.facets),
        "metadata": dict(chunk.metadata),
    }


def scored_chunk(point_id: object, score: float, payload: Mapping[str, Any] | None) -> ScoredChunk:
    """A search hit rebuilt from a point's id, cosine score and payload."""
    data = payload or {}
    return ScoredChunk(
        chunk_id=str(data.get("chunk_id") or point_id),
        doc_id=str(data.get("doc_id", "")),
        score=float(score),
        text=str(data.get("text", "")),
        title=str(data.get("title", "")),
        start=int(data.get("start", 0)),
        end=int(data.get("end", 0)),
        ordinal=int(data.get("ordinal", 0)),
        metadata=dict(data.get("metadata") or {}),
    )


def check_vectors(dim: int, vectors: Sequence[Sequence[float]]) -> list[list[float]]:
    """The vectors as float lists, or ``ConfigError`` when one has the wrong dimension.

    A wrong dimension means the embedder and the index disagree (a model was
    swapped under an existing collection): a configuration problem, named as such
    instead of surfacing as an engine error halfway through a batch.
    """
    out: list[list[float]] = []
    for vector in vectors:
        values = [float(x) for x in vector]
        if len(values) != dim:
            raise ConfigError(
                f"vector has dimension {len(values)} but the index expects {dim}; "
                "was the embedding model changed without rebuilding the collection?",
                expected=dim,
                got=len(values),
            )
        out.append(values)
    return out


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items (``itertools.batched`` is 3.12+)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
