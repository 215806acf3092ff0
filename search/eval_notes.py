"""What an evaluation run did, beside its metrics: the fusion applied and the legs left out.

``sieve eval`` reports, per mode, which fusion method and weights fused the
legs and where they came from (the request, the collection's ``sieve tune``
choice, the settings), and how many queries skipped or lost a leg, with the
first reason given. A row whose hybrid was BM25 alone for most queries (a
Chinese data set with an English-only embedder) says so instead of passing for
fusion.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from search.types import SearchResult


@dataclass
class RunNotes:
    """Accumulates what each query's result says; ``summary`` is the report's entry."""

    queries: int = 0
    fusions: Counter[tuple[str, tuple[float, ...] | None, str | None]] = field(
        default_factory=Counter
    )
    skipped: Counter[str] = field(default_factory=Counter)
    degraded: Counter[str] = field(default_factory=Counter)
    reasons: dict[str, str] = field(default_factory=dict)  # leg -> the first reason given
    shares: list[float] = field(default_factory=list)  # adaptive fusion's bm25 share per query

    def add(self, result: SearchResult) -> None:
        self.queries += 1
        if result.fusion is not None:
            weights = None if result.fusion_weights is None else tuple(result.fusion_weights)
            if result.fusion == "adaptive" and weights is not None:
                # One weight pair per query: summarised, not counted one by one.
                self.shares.append(weights[0])
                weights = None
            self.fusions[(result.fusion, weights, result.fusion_source)] += 1
        for leg, why in result.skipped.items():
            self.skipped[leg] += 1
            self.reasons.setdefault(f"skipped {leg}", why)
        for stage, why in result.degraded_reasons.items():
            self.degraded[stage] += 1
            self.reasons.setdefault(f"degraded {stage}", why)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the fusions used (most used first), skipped and degraded counts,
        and adaptive fusion's per-query bm25 shares summarised."""
        ordered = sorted(self.shares)
        adaptive = (
            {
                "queries": len(ordered),
                "bm25_share": {
                    "min": ordered[0],
                    "p50": ordered[len(ordered) // 2],
                    "mean": round(sum(ordered) / len(ordered), 4),
                    "max": ordered[-1],
                },
            }
            if ordered
            else None
        )
        return {
            "adaptive": adaptive,
            "queries": self.queries,
            "fusion": [
                {"method": m, "weights": None if w is None else list(w), "source": s, "queries": n}
                for (m, w, s), n in self.fusions.most_common()
            ],
            "skipped": {
                leg: {"queries": n, "reason": self.reasons[f"skipped {leg}"]}
                for leg, n in self.skipped.items()
            },
            "degraded": {
                stage: {"queries": n, "reason": self.reasons[f"degraded {stage}"]}
                for stage, n in self.degraded.items()
            },
        }


def describe(name: str, notes: dict[str, Any]) -> list[str]:
    """Indented lines for a terminal: what ``name``'s queries ran, from ``summary``."""
    lines = []
    for used in notes["fusion"]:
        weights = "" if used["weights"] is None else " ({:g}, {:g})".format(*used["weights"])
        lines.append(
            f"    {name}: fused by {used['method']}{weights} from the {used['source']} "
            f"on {used['queries']} of {notes['queries']} queries"
        )
    share = (notes.get("adaptive") or {}).get("bm25_share")
    if share:
        lines.append(
            f"    {name}: adaptive bm25 share per query: min {share['min']:.2f}, median "
            f"{share['p50']:.2f}, mean {share['mean']:.2f}, max {share['max']:.2f}"
        )
    for kind in ("skipped", "degraded"):
        for leg, entry in notes[kind].items():
            lines.append(
                f"    {name}: {leg} {kind} on {entry['queries']} of {notes['queries']} queries "
                f"({entry['reason']})"
            )
    return lines
