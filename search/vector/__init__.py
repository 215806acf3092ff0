"""The vector leg: the ``VectorIndex`` contract, a factory, and helpers both Qdrants share.

Both implementations store one point per chunk with the same payload (the
record of ``search.store.codec``), so an index can move between Qdrant Edge
(embedded) and a Qdrant server without any other module noticing.
Implementations are imported lazily: a deployment that uses the server never
loads the 35 MB Qdrant Edge extension, and vice versa.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from search.errors import ConfigError
from search.vector.base import VectorIndex, check_vectors

if TYPE_CHECKING:
    from search.config import Settings

__all__ = [
    "VectorIndex",
    "check_vectors",
    "open_vector_index",
]


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
