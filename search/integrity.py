"""Which registry wrote an index: recorded beside every index, checked before trusting either.

Each index carries the id of the registry that wrote it (``Registry.identity``):

- the embedded engines (tantivy, Qdrant Edge) in a small file beside their
  folders, ``<data_dir>/collections/<collection>/<engine>.registry-id`` (outside
  the index folders, so clearing an index keeps it);
- Elasticsearch in the index mapping's ``_meta``, a Qdrant server in the
  collection's metadata (Qdrant 1.16+), through the index's own
  ``get_meta``/``set_meta`` (the ``MetaStore`` protocol).

``verify_collection`` compares them with the registry before a collection is
used. An index stamped by another registry, or holding chunks that the
registry knows nothing about, means the registry is missing, empty or was
replaced: ``RegistryMismatch``, and nothing is written or deleted. An empty
index, or an unstamped one whose collection the registry knows (written before
stamps existed, or cleared by a rebuild on a server), is stamped with the
registry's id.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from search.config import Settings
from search.errors import BackendUnavailable, RegistryMismatch
from search.keyword.base import KeywordIndex
from search.registry import Registry
from search.vector.base import VectorIndex

log = logging.getLogger(__name__)

STAMP_KEY = "sieve_registry_id"
STAMP_SUFFIX = ".registry-id"

AnyIndex = KeywordIndex | VectorIndex


@runtime_checkable
class MetaStore(Protocol):
    """An index that keeps small key/value metadata itself (the server backends)."""

    def get_meta(self, key: str) -> str | None:
        """The value under ``key``, or None."""
        ...

    def set_meta(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``."""
        ...


def stamp_path(settings: Settings, collection: str, index: AnyIndex) -> Path:
    """Where an embedded index's registry id is kept."""
    return settings.data_dir / "collections" / collection / f"{index.name}{STAMP_SUFFIX}"


def read_stamp(settings: Settings, collection: str, index: AnyIndex) -> str | None:
    """The id of the registry that wrote ``index``, or None when it carries none."""
    if isinstance(index, MetaStore):
        return index.get_meta(STAMP_KEY) or None
    try:
        return stamp_path(settings, collection, index).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def write_stamp(settings: Settings, collection: str, index: AnyIndex, registry_id: str) -> None:
    """Record that ``registry_id`` is the registry of ``index`` (atomically, for files)."""
    if isinstance(index, MetaStore):
        index.set_meta(STAMP_KEY, registry_id)
        return
    path = stamp_path(settings, collection, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(registry_id + "\n", encoding="utf-8")
    os.replace(partial, path)


def stamped_collections(settings: Settings) -> list[str]:
    """Collections with an embedded index in the data directory (sorted).

    Server indexes are not listed: name them explicitly where it matters.
    """
    root = settings.data_dir / "collections"
    if not root.is_dir():
        return []
    return sorted(path.name for path in root.iterdir() if path.is_dir())


def _registry_state(registry: Registry) -> str:
    if registry.identity.created:
        return "missing or empty (a new, empty one was just created)"
    if not registry.collections():
        return "missing or empty (it holds no documents)"
    return "another registry (was it replaced?)"


def verify_collection(
    settings: Settings,
    registry: Registry,
    collection: str,
    indexes: Mapping[str, AnyIndex],
    *,
    strict: bool = True,
) -> list[str]:
    """Check that ``indexes`` (``{"keyword": ..., "vector": ...}``) belong to ``registry``.

    Raises ``RegistryMismatch`` (one line naming the index, both ids, the data
    directory and what to do) before anything is stamped, so a refusal changes
    nothing. Indexes that may be adopted are stamped. With ``strict=False`` an
    index that cannot be reached is left unchecked (its name is returned), so
    a down backend degrades searches instead of closing the collection; with
    ``strict=True`` (before any repair) its ``BackendUnavailable`` propagates.
    """
    identity = registry.identity
    to_stamp: list[AnyIndex] = []
    unchecked: list[str] = []
    for role, index in indexes.items():
        try:
            stamp = read_stamp(settings, collection, index)
            if stamp == identity.id:
                continue
            chunks = index.count()
        except BackendUnavailable as exc:
            if strict:
                raise
            log.warning("%s index of %r left unchecked: %s", role, collection, exc)
            unchecked.append(role)
            continue
        if chunks == 0:
            to_stamp.append(index)  # nothing in it can be lost on any registry's word
            continue
        if stamp is None and registry.stats(collection)["documents"]:
            to_stamp.append(index)  # written before stamps existed, or cleared and rebuilt
            continue
        written_by = f"registry {stamp}" if stamp else "a registry that left no id"
        raise RegistryMismatch(
            f"collection {collection!r}: the {index.name} index ({chunks} chunks) was written by "
            f"{written_by}, but the registry at {registry.location} is "
            f"{_registry_state(registry)} (id {identity.id}); nothing was changed. Restore the "
            f"registry of data dir {settings.data_dir}, or rebuild it from the indexes with "
            "`sieve recover-registry`",
            collection=collection,
            index=index.name,
            stamp=stamp,
            registry_id=identity.id,
            data_dir=str(settings.data_dir),
        )
    for index in to_stamp:
        write_stamp(settings, collection, index, identity.id)
    return unchecked


# What reconcile and the chunk view compare: the registry against each index.
TARGETS = ("keyword", "vector")


@dataclass
class Difference:
    """What one index disagrees with the registry about."""

    missing: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """How many documents differ."""
        return len(self.missing) + len(self.stale) + len(self.orphans)

    def to_dict(self) -> dict[str, object]:
        """Counts, the first few ids of each kind, and every orphan id (the deletions)."""
        return {
            "missing": len(self.missing),
            "stale": len(self.stale),
            "orphans": len(self.orphans),
            "examples": (self.missing + self.stale + self.orphans)[:10],
            "orphan_ids": list(self.orphans),
        }


def compare(expected: dict[str, int], actual: dict[str, int]) -> Difference:
    """Diff ``{doc_id: version}`` of the registry against one index's."""
    return Difference(
        missing=sorted(d for d in expected if d not in actual),
        stale=sorted(d for d, v in expected.items() if d in actual and actual[d] != v),
        orphans=sorted(d for d in actual if d not in expected),
    )
