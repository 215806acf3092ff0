"""The vector leg's contract. Implementations: Qdrant Edge (embedded), Qdrant server."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from search.errors import ConfigError
from search.store import UpsertResult
from search.types import Chunk, Filters, ScoredChunk


@runtime_checkable
class VectorIndex(Protocol):
    """Dense vectors of chunks, cosine similarity, payload filters inside the search.

    Point ids are the chunk ids (deterministic uuid5), so a replayed write
    overwrites instead of duplicating. Writes follow the version rule of
    ``upsert``: an older write is refused and reported, never applied.
    """

    name: str
    dim: int

    def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> UpsertResult:
        """Replace every point of the documents in ``chunks`` with these chunks.

        A document's old points beyond the new chunk count are removed too.
        Returns once the write is durable and visible to searches.

        The version rule (``search.store``): a document whose stored version
        is newer than its chunks' ``version`` is refused, named in the
        result's ``refused`` with both versions, and left exactly as it was; a
        write is never applied in part. The stored version written again is
        an idempotent rewrite (a replay duplicates nothing). ``ValueError``
        when ``vectors`` does not match ``chunks`` or a document comes at two
        versions in one write; ``ConfigError`` for a vector of the wrong
        dimension.
        """
        ...

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """Remove every point of these documents. Unknown ids are ignored."""
        ...

    def search(
        self, vector: Sequence[float], top_k: int, filters: Filters | None = None
    ) -> list[ScoredChunk]:
        """Nearest chunks by cosine similarity, best first, filters applied in the search."""
        ...

    def count(self) -> int:
        """Number of points stored."""
        ...

    def doc_versions(self) -> dict[str, int]:
        """Every document id in the index with the version its points carry."""
        ...

    def chunk_versions(self, doc_id: str) -> dict[str, int]:
        """The ids of the chunks stored for one document, each with its version.

        Empty when the index holds none of it; what a document's inspection
        (``search.chunk_presence``) compares with the chunks the registry's text makes.
        """
        ...

    def iter_chunks(self) -> Iterator[Chunk]:
        """Every stored chunk as written (doc id, version, title, text, offsets, metadata).

        In no particular order; what ``search.recover`` rebuilds a lost registry from.
        """
        ...

    def clear(self) -> None:
        """Remove everything (used by rebuilds and tests)."""
        ...

    def close(self) -> None:
        """Release files and connections."""
        ...


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


def chunk_version(payload: Mapping[str, Any] | None, point_id: object) -> tuple[str, int]:
    """``(chunk id, version)`` of a stored point: its payload's chunk id, else the point's id.

    Both Qdrant backends (embedded Edge and the server) store points this way.
    """
    data = payload or {}
    return str(data.get("chunk_id") or point_id), int(data.get("version") or 0)
