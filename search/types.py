"""Values that cross module boundaries: small, frozen, and cheap to copy.

Re-score or annotate with ``dataclasses.replace``; never mutate.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Mode = Literal["bm25", "vector", "hybrid"]
MODES: tuple[Mode, ...] = get_args(Mode)
# How ``Document.text`` is cleaned before chunking.
ContentType = Literal["text", "markdown", "html"]
CONTENT_TYPES: tuple[str, ...] = get_args(ContentType)

# Metadata values that can be filtered on. Lists mean "any of" in a filter and
# "all of these values" on a document.
MetaValue = str | int | bool | list[str] | list[int]
Filters = Mapping[str, MetaValue]

# uuid5 namespace of chunk ids. Never change it: ids must stay stable across
# releases so that a replayed write overwrites instead of duplicating.
CHUNK_NAMESPACE = uuid.UUID("6f1c2a7e-3b1d-5c9a-9e4f-2d7b8a0c5e13")


def chunk_id(doc_id: str, ordinal: int) -> str:
    """Deterministic id of chunk ``ordinal`` of ``doc_id`` (a UUID string)."""
    return str(uuid.uuid5(CHUNK_NAMESPACE, f"{doc_id}\x1f{ordinal}"))


def facet_terms(metadata: Mapping[str, Any]) -> list[str]:
    """Flatten filterable metadata into ``key=value`` terms.

    Both BM25 engines index these as untokenised keywords and the vector
    engines store them as a payload array, so one filter shape works on all.
    Only scalar values (and lists of scalars) are filterable; nested objects
    are kept as metadata but not indexed for filtering.
    """
    terms: list[str] = []
    for key, value in metadata.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, bool):
                terms.append(f"{key}={'true' if item else 'false'}")
            elif isinstance(item, str | int):
                terms.append(f"{key}={item}")
    return sorted(set(terms))


def filter_terms(filters: Filters | None) -> list[list[str]]:
    """Turn a filter mapping into a conjunction of disjunctions of facet terms.

    ``{"lang": "en", "topic": ["a", "b"]}`` becomes
    ``[["lang=en"], ["topic=a", "topic=b"]]``: every inner list must match at
    least one term.
    """
    if not filters:
        return []
    clauses: list[list[str]] = []
    for key, value in sorted(filters.items()):
        values = value if isinstance(value, list) else [value]
        clauses.append(facet_terms({key: values}))
    return clauses


@dataclass(frozen=True)
class Document:
    """A document as an admin gives it to Sieve."""

    id: str
    text: str
    title: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    content_type: str = "text"  # one of CONTENT_TYPES


@dataclass(frozen=True)
class Chunk:
    """A passage of a cleaned document; the unit both indexes store."""

    id: str
    doc_id: str
    ordinal: int
    text: str
    start: int  # character offsets into the cleaned document text
    end: int
    title: str = ""
    version: int = 1
    facets: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoredChunk:
    """One hit from one leg (BM25 or vector), before fusion."""

    chunk_id: str
    doc_id: str
    score: float
    text: str = ""
    title: str = ""
    start: int = 0
    end: int = 0
    ordinal: int = 0
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LegScore:
    """Where a hit stood in one leg: raw score and 1-based rank."""

    score: float
    rank: int


@dataclass(frozen=True)
class Hit:
    """One result document, with where it came from in every stage."""

    doc_id: str
    title: str
    text: str  # the passage that earned the hit (best chunk)
    chunk_id: str
    start: int
    end: int
    score: float  # the score the results are ordered by
    rank: int
    metadata: Mapping[str, Any] = field(default_factory=dict)
    bm25: LegScore | None = None
    vector: LegScore | None = None
    fused: LegScore | None = None
    rerank_logit: float | None = None
    rerank_score: float | None = None
    relevance: float | None = None  # calibrated P(relevant), when the model has a calibration


@dataclass(frozen=True)
class SearchRequest:
    """What one query asks for; ``search.request`` holds its limits and validation."""

    query: str
    mode: Mode = "hybrid"
    top_k: int = 10  # hits in this page
    offset: int = 0  # where the page starts in the query's window
    filters: Filters | None = None
    collection: str = "default"
    fusion: str | None = None  # None: the configured default
    weights: tuple[float, float] | None = None  # (bm25, vector)
    candidates: int | None = None  # per-leg depth; None: the configured default
    rerank: bool | None = None  # None: on when a reranker is configured
    rerank_depth: int | None = None  # how many fused hits to rerank; None: configured
    # The ordered list pages are cut from; None: planned (see search.request).
    # A pagination cursor pins it so that every page slices the same list.
    window: int | None = None
    # Keep only reranked hits whose calibrated relevance is at least this (0-1).
    min_relevance: float | None = None


@dataclass(frozen=True)
class QueryPlan:
    """How one query runs (``search.request.plan``): each stage and how deep.

    ``window`` is the ordered list that pages are cut from, ``depth`` how many
    candidates each leg retrieves, ``rerank_depth`` how many of the window's
    head the cross-encoder orders (0: no reranking).
    """

    mode: Mode
    fusion: str
    rerank: bool
    rerank_depth: int
    window: int
    depth: int


@dataclass(frozen=True)
class SearchResult:
    """One page of hits plus what happened on the way: timings, degradations, skipped legs.

    Serialised in one place, ``search.serialize.result_json``.
    """

    query: str
    mode: Mode
    hits: list[Hit]  # the page: window[offset : offset + top_k]
    timings_ms: dict[str, float]
    degraded: list[str] = field(default_factory=list)
    degraded_reasons: dict[str, str] = field(default_factory=dict)  # stage -> why, one line
    # A leg deliberately not run, with the reason (e.g. the embedder knows no Chinese).
    skipped: dict[str, str] = field(default_factory=dict)
    fusion: str | None = None  # the method, when both legs were fused
    # The (bm25, vector) weights fusion applied; None when one leg answered or the
    # method weighs none (plain RRF).
    fusion_weights: tuple[float, float] | None = None
    # Where the fusion came from: "request", "collection" (sieve tune) or "setting".
    fusion_source: str | None = None
    # Adaptive fusion only: the query-time signals its weights came from, and why.
    fusion_signals: Mapping[str, float] | None = None
    fusion_reason: str | None = None
    reranked: bool = False
    rerank_window: int = 0  # how many of the top hits the reranker ordered
    rerank_blend: float | None = None  # weight of the retrieval prior blended in; None: pure
    # Where that weight came from (search.rerank.blend.SOURCES); None when not reranked.
    rerank_blend_source: str | None = None
    cached_scores: int = 0  # how many rerank scores came from the cache
    offset: int = 0
    top_k: int = 10  # the page size asked for
    total_window: int = 0  # how many ordered hits the window holds (<= plan.window)
    plan: QueryPlan | None = None


@dataclass(frozen=True)
class RerankScore:
    """A cross-encoder's verdict on one (query, passage) pair.

    ``logit`` is the raw model output (what the cache stores); ``score`` is its
    sigmoid. A passage longer than the model's window is scored by its best
    window, whose character offsets into the passage are ``start``/``end``.
    """

    logit: float
    score: float
    start: int = 0
    end: int = 0


@dataclass(frozen=True)
class RerankBatch:
    """Scores for a list of passages (same order), with where the time went.

    ``timings_ms`` keys: ``cache`` (lookup), ``queue`` (waiting for a worker),
    ``model`` (forward passes); absent stages are simply missing. ``tokens``
    counts the tokens the model read for this batch (every scored pair, query
    and special tokens included; a cached score costs none).
    """

    scores: list[RerankScore]
    timings_ms: dict[str, float] = field(default_factory=dict)
    cached: int = 0  # how many scores came from the cache
    tokens: int = 0

    def best_first(self, top_n: int | None = None) -> list[int]:
        """Indices of the passages by descending logit (ties: input order), the top ``top_n``."""
        order = sorted(range(len(self.scores)), key=lambda i: (-self.scores[i].logit, i))
        return order if top_n is None else order[:top_n]
