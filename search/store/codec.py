"""The stored form of a chunk: one record layout for every index backend.

Tantivy documents, Elasticsearch ``_source`` and Qdrant payloads all carry
these fields under these names, so an index can move between backends and a
hit reads back the same way from each. A backend adds what only it stores
(the BM25 ``tokens``, a vector) beside the record and maps the field types its
engine needs (tantivy keeps the passage text in bytes fields), nothing more.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from search.types import Chunk, ScoredChunk, facet_terms

# Every field of a stored record.
RECORD_FIELDS = (
    "chunk_id",
    "doc_id",
    "text",
    "title",
    "start",
    "end",
    "ordinal",
    "version",
    "facets",
    "metadata",
)
# The fields a search hit is rebuilt from (version and facets are for the store).
HIT_FIELDS = ("chunk_id", "doc_id", "text", "title", "start", "end", "ordinal", "metadata")


def encode_chunk(chunk: Chunk) -> dict[str, Any]:
    """The record stored for ``chunk`` (a fresh dict the caller may extend)."""
    return {
        "chunk_id": chunk.id,
        "doc_id": chunk.doc_id,
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


def decode_hit(
    record: Mapping[str, Any] | None, score: float, *, stored_id: object = ""
) -> ScoredChunk:
    """A search hit rebuilt from a stored record and the engine's score.

    ``stored_id`` (the engine's own id of the record, which is the chunk id)
    stands in for a record that lacks ``chunk_id``.
    """
    data = record or {}
    return ScoredChunk(
        chunk_id=str(data.get("chunk_id") or stored_id),
        doc_id=str(data.get("doc_id", "")),
        score=float(score),
        text=str(data.get("text", "")),
        title=str(data.get("title", "")),
        start=int(data.get("start", 0)),
        end=int(data.get("end", 0)),
        ordinal=int(data.get("ordinal", 0)),
        metadata=dict(data.get("metadata") or {}),
    )


def decode_chunk(record: Mapping[str, Any] | None, *, stored_id: object = "") -> Chunk:
    """The whole ``Chunk`` back from its stored record (to rebuild a lost registry).

    ``stored_id`` as in ``decode_hit``; facets missing from a record (tantivy
    indexes them without storing them) are recomputed from the metadata.
    """
    data = record or {}
    metadata = dict(data.get("metadata") or {})
    facets = data.get("facets")
    return Chunk(
        id=str(data.get("chunk_id") or stored_id),
        doc_id=str(data.get("doc_id", "")),
        ordinal=int(data.get("ordinal", 0)),
        text=str(data.get("text", "")),
        start=int(data.get("start", 0)),
        end=int(data.get("end", 0)),
        title=str(data.get("title", "")),
        version=int(data.get("version") or 0),
        facets=tuple(facet_terms(metadata)) if facets is None else tuple(map(str, facets)),
        metadata=metadata,
    )


def decode_version(record: Mapping[str, Any] | None) -> tuple[str, int]:
    """``(doc_id, version)`` of a stored record (as read for version checks)."""
    data = record or {}
    return str(data.get("doc_id", "")), int(data.get("version") or 0)
