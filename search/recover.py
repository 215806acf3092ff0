"""Rebuild a lost registry from the chunk records the indexes store.

Both indexes keep, per chunk, the document id, version, title, metadata, the
passage text and its character offsets into the cleaned document text.
``recover_registry`` reads them back (``iter_chunks``) and writes a registry
that the indexes recognise (it takes the id they carry, or stamps them with
its own), so a reconcile right after finds nothing to repair.

What it restores, per document: the id; the version (the highest either index
holds) and which version each index holds, so a document that one index holds
at an older version is left ``pending`` and the next reconcile rewrites that
index; the title; the metadata; the chunk count; and the text, reassembled
from the chunks at their offsets, overlaps removed (each character is taken
once, from the first chunk that covers it). The whitespace between two chunks,
which the chunker strips, comes back as the same number of spaces, so the
offsets still point at the same passages. Collections: every one named, and
(embedded engines) every one with a folder in the data directory.

What it cannot restore: the content before cleaning (the raw HTML, Markdown or
PDF text: the restored text is the cleaned text, its ``content_type`` is
``"text"``); the ``source``; paragraph breaks between chunks (spaces instead);
the original content hash (recomputed, so re-sending the original content
counts as a change and indexes it again, at the next version); documents that
were only staged (``pending`` in neither index) and ``failed`` states and
errors; update times; and, for the server backends, collections not named.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

from search.errors import InvalidRequest, RegistryCorrupt, RegistryMismatch
from search.integrity import AnyIndex, read_stamp, stamped_collections, write_stamp
from search.keyword import open_keyword_index
from search.registry import Registry, Restored
from search.types import Chunk, Document
from search.vector import open_vector_index

if TYPE_CHECKING:
    from search.engine import SearchEngine

log = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    """What a recovery wrote."""

    registry_id: str
    # Collection -> documents restored.
    documents: dict[str, int] = field(default_factory=dict)
    # Collection -> documents that one index holds at an older version, or not
    # at all (left pending: the next reconcile rewrites that index).
    partial: dict[str, list[str]] = field(default_factory=dict)
    # Where the unusable registry file was moved (SQLite), if it was.
    moved_aside: str | None = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready summary."""
        return {
            "registry_id": self.registry_id,
            "documents": dict(self.documents),
            "partial": {name: list(ids) for name, ids in self.partial.items()},
            "moved_aside": self.moved_aside,
        }

    def lines(self) -> list[str]:
        """The report for a person."""
        out = [f"registry {self.registry_id} rebuilt from the indexes"]
        if self.moved_aside:
            out.append(f"  the previous registry was moved to {self.moved_aside}")
        for name, count in sorted(self.documents.items()):
            behind = len(self.partial.get(name, []))
            suffix = f" ({behind} behind in one index: run `sieve reconcile`)" if behind else ""
            out.append(f"  {name}: {count} document(s){suffix}")
        return out


def reassemble(chunks: Iterable[Chunk]) -> str:
    """A document's cleaned text from its chunks: offsets honoured, overlaps taken once."""
    parts: list[str] = []
    pos = 0
    for chunk in sorted(chunks, key=lambda c: (c.start, c.ordinal)):
        if chunk.start > pos:
            parts.append(" " * (chunk.start - pos))  # stripped whitespace between chunks
            pos = chunk.start
        if chunk.end > pos:
            parts.append(chunk.text[pos - chunk.start :])
            pos = chunk.end
    return "".join(parts)


def _latest(index: AnyIndex, wanted: set[str] | None = None) -> dict[str, list[Chunk]]:
    """Each document's chunks at the highest version the index holds."""
    out: dict[str, list[Chunk]] = {}
    for chunk in index.iter_chunks():
        if wanted is not None and chunk.doc_id not in wanted:
            continue
        held = out.get(chunk.doc_id)
        if held is None or chunk.version > held[0].version:
            out[chunk.doc_id] = [chunk]
        elif chunk.version == held[0].version:
            held.append(chunk)
    return out


def _document(chunks: Sequence[Chunk]) -> Document:
    first = min(chunks, key=lambda c: c.ordinal)
    return Document(
        id=first.doc_id,
        text=reassemble(chunks),
        title=first.title,
        metadata=dict(first.metadata),
        content_type="text",
    )


def restore_collection(keyword: AnyIndex, vector: AnyIndex) -> tuple[list[Restored], list[str]]:
    """The documents of one collection as both indexes hold them, and those one lags on."""
    kw = _latest(keyword)
    vector_versions = vector.doc_versions()
    # The vector payloads are read only where the keyword index lacks the newest text.
    needed = {d for d, v in vector_versions.items() if d not in kw or v > kw[d][0].version}
    vec = _latest(vector, needed) if needed else {}
    items: list[Restored] = []
    behind: list[str] = []
    for doc_id in sorted(set(kw) | set(vector_versions)):
        kw_version = kw[doc_id][0].version if doc_id in kw else None
        vec_version = vector_versions.get(doc_id)
        version = max(v for v in (kw_version, vec_version) if v is not None)
        chunks = kw[doc_id] if kw_version == version else vec[doc_id]
        if kw_version != vec_version:
            behind.append(doc_id)
        items.append(Restored(_document(chunks), version, kw_version, vec_version, len(chunks)))
    return items, behind


def _move_aside(registry: Registry) -> str:
    """Rename a SQLite registry file (and its WAL) out of the way; never delete it."""
    url = make_url(registry.url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise RegistryCorrupt(
            f"the registry at {registry.location} cannot be set aside by Sieve: restore the "
            "database, or point SIEVE_REGISTRY_URL at an empty one and recover again",
            url=registry.location,
        )
    registry.close()
    path = Path(url.database)
    suffix = datetime.now(UTC).strftime(".broken-%Y%m%dT%H%M%S%fZ")
    for extra in ("", "-wal", "-shm"):
        source = path.with_name(path.name + extra)
        if source.exists():
            os.replace(source, path.with_name(path.name + suffix + extra))
    return str(path.with_name(path.name + suffix))


def _prepare(registry: Registry, wanted: str | None, replace: bool) -> str | None:
    """Make ``registry`` empty and usable; returns where an old file went."""
    try:
        identity = registry.identity
        holds = bool(registry.collections())
    except RegistryCorrupt:
        log.warning("the registry at %s is corrupt: setting it aside", registry.location)
        return _move_aside(registry)
    if not holds:
        return None
    if wanted is not None and identity.id == wanted:
        raise InvalidRequest(
            f"the registry at {registry.location} is the indexes' own (id {identity.id}) and "
            "holds documents: nothing to recover; run `sieve reconcile` instead"
        )
    if not replace:
        raise RegistryMismatch(
            f"the registry at {registry.location} holds documents of another registry "
            f"(id {identity.id}); recover with replace=True (--replace) to set it aside",
            url=registry.location,
            registry_id=identity.id,
        )
    return _move_aside(registry)


def recover_registry(
    engine: SearchEngine,
    collections: Sequence[str] | None = None,
    *,
    replace: bool = False,
) -> RecoveryReport:
    """Rebuild ``engine``'s registry from its indexes; see the module docstring.

    ``collections``: those to read (default: ``default``, the configured one and
    every collection folder in the data directory; name server-only ones). The
    registry must be missing, empty or corrupt (a corrupt SQLite file is
    renamed ``*.broken-<time>``, never deleted); one holding other documents is
    set aside only with ``replace``. Raises ``RegistryMismatch`` when the
    indexes carry different registry ids.
    """
    settings = engine.settings
    names = sorted(
        set(collections)
        if collections is not None
        else {"default", settings.collection, *stamped_collections(settings)}
    )
    engine.close_collections()  # the embedded engines allow one open index object each
    opened = {
        name: (
            open_keyword_index(settings, name),
            open_vector_index(settings, name, engine.embedder.dim),
        )
        for name in names
    }
    try:
        stamps = {
            (name, index.name): read_stamp(settings, name, index)
            for name, pair in opened.items()
            for index in pair
        }
        ids = {stamp for stamp in stamps.values() if stamp}
        if len(ids) > 1:
            detail = ", ".join(f"{c}/{i}: {s}" for (c, i), s in sorted(stamps.items()) if s)
            raise RegistryMismatch(
                f"the indexes were written by different registries ({detail}); recover the "
                "collections of one registry at a time (name them)",
                stamps=sorted(ids),
            )
        wanted = next(iter(ids), None)
        registry = engine.registry
        moved = _prepare(registry, wanted, replace)
        if wanted is not None:
            registry.set_identity(wanted)
        report = RecoveryReport(registry.identity.id, moved_aside=moved)
        for name, (keyword, vector) in opened.items():
            items, behind = restore_collection(keyword, vector)
            registry.add_collection(name)
            report.documents[name] = registry.restore(name, items)
            if behind:
                report.partial[name] = behind
            for index in (keyword, vector):
                write_stamp(settings, name, index, report.registry_id)
        return report
    finally:
        for keyword, vector in opened.values():
            keyword.close()
            vector.close()
