"""The version rule of every index, written once over three primitives per backend.

The rule (stated on ``KeywordIndex.upsert`` and ``VectorIndex.upsert``): a
write replaces a document's chunks only when its version is at least the one
stored. An older version is refused, named in ``UpsertResult.refused`` with
both versions, and changes nothing; the same version again is an idempotent
rewrite (chunk ids are deterministic, so a replay overwrites, and chunks of
that version the rewrite no longer has are removed).

``replace_chunks`` applies it on a ``ChunkStore``: read the stored versions of
the batch's documents, write the chunks of the documents not refused, then
remove every other chunk of those documents at or below the written version.
Each backend provides only the primitives, bound to its own write context:
tantivy runs them inside one commit, Qdrant Edge under its shard lock, so the
check and the write are atomic there. A Qdrant server is written by other
processes too; the registry's check right before the write (``search.indexing``)
keeps that window small. Elasticsearch checks again itself (external
versions) and reports a document found newer at write time from ``put``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from search.types import Chunk

log = logging.getLogger(__name__)

# Documents per version read or delete filter: bounds each engine request
# (Elasticsearch refuses terms queries above 65,536 terms).
FILTER_BATCH = 1_000

E = TypeVar("E")
E_contra = TypeVar("E_contra", contravariant=True)


@dataclass(frozen=True)
class DocFilter:
    """Chunks of ``doc_ids`` whose version is at most ``at_most`` (any, if None),
    except the chunks whose ids are in ``keep``."""

    doc_ids: tuple[str, ...]
    at_most: int | None = None
    keep: frozenset[str] = frozenset()

    def matches(self, doc_id: str, version: int, chunk_id: str) -> bool:
        """Whether a stored chunk falls under this filter (for engines that filter here)."""
        return (
            doc_id in self.doc_ids
            and (self.at_most is None or version <= self.at_most)
            and chunk_id not in self.keep
        )


@dataclass(frozen=True)
class Refusal:
    """A document not written because the index holds a newer version of it."""

    doc_id: str
    stored: int
    offered: int

    def __str__(self) -> str:
        return (
            f"document {self.doc_id!r} version {self.offered} refused: "
            f"the index holds version {self.stored}"
        )


@dataclass(frozen=True)
class UpsertResult:
    """What an ``upsert`` did: documents written, and older writes refused."""

    written: tuple[str, ...] = ()
    refused: tuple[Refusal, ...] = ()


class ChunkStore(Protocol[E_contra]):
    """The primitives a backend provides to ``replace_chunks`` (one write's context).

    ``E_contra`` is what the backend stores beside each chunk's record: BM25
    tokens or a vector.
    """

    def stored_versions(self, doc_ids: Sequence[str]) -> dict[str, int]:
        """The highest version stored for each of ``doc_ids`` that has any chunk."""
        ...

    def put(self, chunks: Sequence[Chunk], extras: Sequence[E_contra]) -> dict[str, int]:
        """Write each chunk under its id, overwriting a stored chunk of that id.

        Returns the documents found holding a newer version at write time, with
        that version: only an engine that checks versions itself (Elasticsearch)
        finds any. Chunks of such documents that were written anyway are strays;
        ``replace_chunks`` removes them.
        """
        ...

    def delete(self, where: DocFilter) -> None:
        """Remove every stored chunk ``where`` matches (visible with the write's end)."""
        ...


def check_batch(chunks: Sequence[Chunk], extras: Sequence[object]) -> dict[str, int]:
    """Each document's version in this write; ``ValueError`` for a malformed write.

    Malformed: not one entry of ``extras`` per chunk, or a document offered at
    two versions at once (which one would be the write?).
    """
    if len(chunks) != len(extras):
        raise ValueError(f"{len(chunks)} chunks but {len(extras)} entries to store with them")
    offered: dict[str, int] = {}
    for chunk in chunks:
        version = offered.setdefault(chunk.doc_id, chunk.version)
        if version != chunk.version:
            raise ValueError(
                f"document {chunk.doc_id!r} offered at versions {version} and {chunk.version}"
                " in one write"
            )
    return offered


def replace_chunks(
    store: ChunkStore[E], chunks: Sequence[Chunk], extras: Sequence[E]
) -> UpsertResult:
    """Replace the chunks of the batch's documents, refusing every older write.

    A document whose stored version is above the offered one is refused (not
    written, not pruned). Every other document ends holding exactly this
    write's chunks: the write lands first, then its other chunks at or below
    the written version go, so a search never sees the document missing.
    """
    offered = check_batch(chunks, extras)
    if not offered:
        return UpsertResult()
    stored: dict[str, int] = {}
    for ids in _batches(list(offered)):
        stored.update(store.stored_versions(ids))
    refused = {
        doc_id: Refusal(doc_id, stored[doc_id], version)
        for doc_id, version in offered.items()
        if stored.get(doc_id, version) > version
    }
    pairs = [(c, e) for c, e in zip(chunks, extras, strict=True) if c.doc_id not in refused]
    if pairs:
        superseded = store.put([c for c, _ in pairs], [e for _, e in pairs])
        late = {d: v for d, v in superseded.items() if d in offered and v > offered[d]}
        refused.update({d: Refusal(d, v, offered[d]) for d, v in late.items()})
        keep: dict[str, set[str]] = {}
        for chunk, _ in pairs:
            keep.setdefault(chunk.doc_id, set()).add(chunk.id)
        written = {d: v for d, v in offered.items() if d not in refused}
        for version, ids in _by_version(written):
            kept = frozenset(i for d in ids for i in keep[d])
            store.delete(DocFilter(tuple(ids), at_most=version, keep=kept))
        # What this write added to a document superseded meanwhile is below the
        # newer version: everything below it goes.
        for held, ids in _by_version(late):
            store.delete(DocFilter(tuple(ids), at_most=held - 1))
    if refused:
        log.info("refused %d older writes: %s", len(refused), [str(r) for r in refused.values()])
    return UpsertResult(
        written=tuple(d for d in offered if d not in refused),
        refused=tuple(refused[d] for d in offered if d in refused),
    )


def delete_documents(store: ChunkStore[E], doc_ids: Sequence[str]) -> None:
    """Remove every chunk of these documents. Unknown ids are ignored."""
    for ids in _batches(sorted(set(doc_ids))):
        store.delete(DocFilter(tuple(ids)))


def highest_versions(pairs: Iterable[tuple[str, int]]) -> dict[str, int]:
    """``{doc_id: version}`` from ``(doc_id, version)`` of stored chunks.

    A document's chunks share one version; the highest wins should a crash
    ever have left two behind.
    """
    versions: dict[str, int] = {}
    for doc_id, version in pairs:
        if version > versions.get(doc_id, version - 1):
            versions[doc_id] = version
    return versions


def _by_version(versions: dict[str, int]) -> Iterator[tuple[int, list[str]]]:
    """``(version, doc ids)`` groups of at most ``FILTER_BATCH`` ids, in version order."""
    groups: dict[int, list[str]] = {}
    for doc_id, version in versions.items():
        groups.setdefault(version, []).append(doc_id)
    for version, ids in sorted(groups.items()):
        for batch in _batches(ids):
            yield version, batch


def _batches(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), FILTER_BATCH):
        yield ids[start : start + FILTER_BATCH]
