"""Compare the registry with both indexes and repair any difference; rebuild from the registry.

The registry is the source of truth. For each index the reconciler finds:
- missing: documents the registry has that the index does not;
- stale: documents the index holds at another version than the registry's;
- orphans: documents the index holds that the registry does not know.
Missing and stale documents are rewritten from the registry's stored text;
orphans are deleted. A second run right after a repair finds nothing.

An index refuses a write older than what it holds (``search.store``), so a
document the index holds at a newer version than the registry's is deleted
from that index first, then rewritten at the registry's version.

Nothing is repaired on the word of a registry that is not the indexes' own
(``search.integrity``), and a repair that would delete more than
``reconcile_max_delete_share`` of an index's documents is refused unless
forced: that many orphans means the registry, not the index, is wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from search.config import COLLECTION_NAME, DEFAULT_COLLECTION
from search.errors import ConfigError
from search.indexing import Indexer
from search.integrity import (
    TARGETS,
    AnyIndex,
    Difference,
    compare,
    stamped_collections,
    verify_collection,
)

if TYPE_CHECKING:
    from search.engine import SearchEngine

log = logging.getLogger(__name__)

@dataclass
class ReconcileReport:
    """Differences found per index, and whether they were repaired."""

    collection: str
    differences: dict[str, Difference]
    repaired: bool = False
    failed: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    # Index -> why its deletions were refused (too large a share); nothing was repaired then.
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """How many (index, document) differences were found."""
        return sum(d.total for d in self.differences.values())

    def deletions(self) -> dict[str, list[str]]:
        """Per index, the document ids a repair deletes (or deleted)."""
        return {name: list(d.orphans) for name, d in self.differences.items()}

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready summary."""
        return {
            "collection": self.collection,
            "total": self.total,
            "dry_run": self.dry_run,
            "repaired": self.repaired,
            "refused": dict(self.refused),
            "failed": dict(self.failed),
            "indexes": {name: d.to_dict() for name, d in self.differences.items()},
        }

    def lines(self) -> list[str]:
        """The report for a person: counts per index, and in a dry run every id to delete."""
        out = [f"collection {self.collection}: {self.total} difference(s)"]
        for name, diff in self.differences.items():
            out.append(
                f"  {name:>7}: missing {len(diff.missing)}, stale {len(diff.stale)}, "
                f"orphans {len(diff.orphans)}"
            )
            if self.dry_run and diff.orphans:
                out.append(f"  {name:>7}: would delete {', '.join(diff.orphans)}")
        out.extend(f"  refused: {reason}" for reason in self.refused.values())
        if self.total and not self.refused:
            out.append("repaired" if self.repaired else "not repaired (dry run or failures)")
        return out


def _check_share(share: float) -> float:
    if not 0.0 <= share <= 1.0:
        raise ConfigError(
            f"SIEVE_RECONCILE_MAX_DELETE_SHARE={share!r} must be from 0 to 1", value=share
        )
    return share


def _verify(indexer: Indexer) -> None:
    """Strictly: a down index fails the run instead of being skipped unchecked."""
    indexes: dict[str, AnyIndex] = {"keyword": indexer.keyword, "vector": indexer.vector}
    verify_collection(indexer.settings, indexer.registry, indexer.collection, indexes)


def reconcile(
    indexer: Indexer,
    *,
    repair: bool = True,
    force: bool = False,
    max_delete_share: float | None = None,
) -> ReconcileReport:
    """Find (and by default repair) every difference between registry and indexes.

    Raises ``RegistryMismatch`` (nothing compared, nothing changed) when the
    indexes were written by another registry. When the orphans of an index
    exceed ``max_delete_share`` (default: ``settings.reconcile_max_delete_share``)
    of its documents, ``refused`` says so and nothing is repaired, unless
    ``force``. ``repair=False`` is a dry run: ``deletions()`` lists the ids a
    repair would delete.
    """
    if max_delete_share is None:
        max_delete_share = indexer.settings.reconcile_max_delete_share
    share = _check_share(max_delete_share)
    _verify(indexer)
    collection = indexer.collection
    expected = indexer.registry.versions(collection)
    actual = {"keyword": indexer.keyword.doc_versions(), "vector": indexer.vector.doc_versions()}
    differences = {target: compare(expected, actual[target]) for target in TARGETS}
    report = ReconcileReport(collection, differences, dry_run=not repair)
    if not force:
        for target, diff in differences.items():
            held = len(actual[target])
            if diff.orphans and len(diff.orphans) > share * held:
                report.refused[target] = (
                    f"{collection}/{target}: would delete {len(diff.orphans)} of {held} "
                    f"documents, more than the allowed share {share:g} "
                    "(SIEVE_RECONCILE_MAX_DELETE_SHARE); check the registry, then force"
                )
    if not repair or report.total == 0 or report.refused:
        return report
    for target, diff in differences.items():
        index = indexer.keyword if target == "keyword" else indexer.vector
        if diff.orphans:
            log.warning("%s: deleting %d orphan documents", target, len(diff.orphans))
            index.delete_documents(diff.orphans)
        ahead = [d for d in diff.stale if actual[target][d] > expected[d]]
        if ahead:
            log.warning(
                "%s: %d documents are ahead of the registry; deleting them before the rewrite",
                target,
                len(ahead),
            )
            index.delete_documents(ahead)
        todo = diff.missing + diff.stale
        if todo:
            log.warning("%s: rewriting %d missing or stale documents", target, len(todo))
            records = indexer.registry.records(collection, todo).values()
            items = [(record.document(), record.version) for record in records]
            result = indexer.rewrite(items, (target,))
            report.failed.update(result.failed)
            report.failed.update(result.refused)
    report.repaired = not report.failed
    return report


def known_collections(engine: SearchEngine) -> list[str]:
    """Every collection to check: the registry's, the configured one, and any on disk."""
    names = {DEFAULT_COLLECTION, engine.settings.collection, *engine.registry.collection_names()}
    names.update(stamped_collections(engine.settings))
    return sorted(name for name in names if COLLECTION_NAME.fullmatch(name))


def reconcile_all(
    engine: SearchEngine,
    collections: Sequence[str] | None = None,
    *,
    repair: bool = True,
    force: bool = False,
    max_delete_share: float | None = None,
) -> list[ReconcileReport]:
    """``reconcile`` over ``collections`` (default: ``known_collections``), in name order.

    Every collection is checked against the registry before any is repaired,
    so a mismatch in one stops the run before anything changed in another.
    """
    names = sorted(set(collections)) if collections is not None else known_collections(engine)
    indexers = [engine.collection(name).indexer for name in names]
    for indexer in indexers:
        _verify(indexer)
    return [
        reconcile(indexer, repair=repair, force=force, max_delete_share=max_delete_share)
        for indexer in indexers
    ]


def rebuild(
    indexer: Indexer,
    target: str,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Empty one index (or both: ``"all"``) and refill it from the registry alone.

    Refused (``RegistryMismatch``) before anything is cleared when the indexes
    belong to another registry.
    """
    targets = TARGETS if target == "all" else (target,)
    for name in targets:
        if name not in TARGETS:
            raise ValueError(f"unknown index {name!r}; choose keyword, vector or all")
    _verify(indexer)
    for name in targets:
        (indexer.keyword if name == "keyword" else indexer.vector).clear()
    items = indexer.registry.iter_documents(indexer.collection)
    report = indexer.rewrite(items, targets, on_progress=on_progress)
    # A server index is deleted by clear(), its stamp with it: stamp it again.
    _verify(indexer)
    return report.indexed
