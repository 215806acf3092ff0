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
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from search.indexing import Indexer

log = logging.getLogger(__name__)

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
        """Counts plus the first few ids of each kind, for reports."""
        return {
            "missing": len(self.missing),
            "stale": len(self.stale),
            "orphans": len(self.orphans),
            "examples": (self.missing + self.stale + self.orphans)[:10],
        }


@dataclass
class ReconcileReport:
    """Differences found per index, and whether they were repaired."""

    collection: str
    differences: dict[str, Difference]
    repaired: bool = False
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """How many (index, document) differences were found."""
        return sum(d.total for d in self.differences.values())

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready summary."""
        return {
            "collection": self.collection,
            "total": self.total,
            "repaired": self.repaired,
            "failed": dict(self.failed),
            "indexes": {name: d.to_dict() for name, d in self.differences.items()},
        }


def compare(expected: dict[str, int], actual: dict[str, int]) -> Difference:
    """Diff ``{doc_id: version}`` of the registry against one index's."""
    return Difference(
        missing=sorted(d for d in expected if d not in actual),
        stale=sorted(d for d, v in expected.items() if d in actual and actual[d] != v),
        orphans=sorted(d for d in actual if d not in expected),
    )


def reconcile(indexer: Indexer, *, repair: bool = True) -> ReconcileReport:
    """Find (and by default repair) every difference between registry and indexes."""
    collection = indexer.collection
    expected = indexer.registry.versions(collection)
    actual = {
        "keyword": indexer.keyword.doc_versions(),
        "vector": indexer.vector.doc_versions(),
    }
    differences = {target: compare(expected, held) for target, held in actual.items()}
    report = ReconcileReport(collection, differences)
    if not repair or report.total == 0:
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


def rebuild(
    indexer: Indexer,
    target: str,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Empty one index (or both: ``"all"``) and refill it from the registry alone."""
    targets = TARGETS if target == "all" else (target,)
    for name in targets:
        if name not in TARGETS:
            raise ValueError(f"unknown index {name!r}; choose keyword, vector or all")
        (indexer.keyword if name == "keyword" else indexer.vector).clear()
    items = indexer.registry.iter_documents(indexer.collection)
    report = indexer.rewrite(items, targets, on_progress=on_progress)
    return report.indexed
