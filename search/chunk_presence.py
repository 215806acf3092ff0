"""Where each chunk of one document is: the chunks its stored text makes, and which
of them each index holds at the registry's version.

The expected chunks are made again from the registry's text by the indexer's own
``prepare`` (deterministic chunk ids), so no chunk list is stored twice. Each
index is asked for that document's chunk ids (``chunk_versions``), and the two
are compared with ``search.reconcile.compare``, the rule reconcile repairs by,
applied per chunk: missing, stale (another version) and orphans (chunk ids the
text no longer makes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from search.config import Settings
from search.errors import IndexingError
from search.indexing import prepare
from search.integrity import TARGETS, AnyIndex, Difference, compare
from search.records import DocumentRecord, Staged

PREVIEW_CHARS = 240  # of each chunk's text in the answer


@dataclass(frozen=True)
class ChunkPresence:
    """One expected chunk and whether each index holds it at the registry's version."""

    id: str
    ordinal: int
    start: int
    end: int
    text: str
    tokens: int  # BM25 terms indexed for it (the title's included)
    present: dict[str, bool]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, the text cut to a preview."""
        preview = self.text if len(self.text) <= PREVIEW_CHARS else self.text[:PREVIEW_CHARS] + "…"
        return {
            "id": self.id,
            "ordinal": self.ordinal,
            "start": self.start,
            "end": self.end,
            "preview": preview,
            "chars": len(self.text),
            "tokens": self.tokens,
            "indexes": dict(self.present),
        }


@dataclass(frozen=True)
class DocumentChunks:
    """A document's chunks, and per index what differs from them."""

    doc_id: str
    version: int
    chunks: list[ChunkPresence]
    differences: dict[str, Difference]
    error: str | None  # why the text makes no chunks (it cannot be indexed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: chunks in order, then each index's missing/stale/orphan chunk ids."""
        return {
            "doc_id": self.doc_id,
            "version": self.version,
            "error": self.error,
            "chunks": [chunk.to_dict() for chunk in self.chunks],
            "indexes": {
                name: {"missing": d.missing, "stale": d.stale, "orphans": d.orphans}
                for name, d in self.differences.items()
            },
        }


def document_chunks(
    settings: Settings, record: DocumentRecord, indexes: dict[str, AnyIndex]
) -> DocumentChunks:
    """Compare the chunks of ``record``'s text with what each of ``indexes`` holds."""
    error: str | None = None
    try:
        prepared = prepare(Staged(record.document(), record.version, True), settings)
        chunks, tokens = prepared.chunks, prepared.tokens
    except IndexingError as exc:
        chunks, tokens, error = [], [], str(exc)
    expected = {chunk.id: record.version for chunk in chunks}
    differences = {
        name: compare(expected, indexes[name].chunk_versions(record.id)) for name in TARGETS
    }
    absent = {name: {*d.missing, *d.stale} for name, d in differences.items()}
    rows = [
        ChunkPresence(
            id=chunk.id,
            ordinal=chunk.ordinal,
            start=chunk.start,
            end=chunk.end,
            text=chunk.text,
            tokens=len(terms),
            present={name: chunk.id not in absent[name] for name in TARGETS},
        )
        for chunk, terms in zip(chunks, tokens, strict=True)
    ]
    return DocumentChunks(record.id, record.version, rows, differences, error)
