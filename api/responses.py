"""Pydantic models of the HTTP API's answers: documentation, not validation.

Views build plain dicts; these models give ``/openapi.json`` (``api/openapi.py``)
its response schemas, and the schemathesis test checks that the answers agree.
Requests are in ``api/schemas.py``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from search.types import Mode


class Out(BaseModel):
    """Base of response models (documentation only)."""

    model_config = ConfigDict(extra="forbid")


class LegOut(Out):
    """A hit's place in one stage."""

    score: float
    rank: int


class FusedOut(LegOut):
    """A hit's place in the fused order, and the weights that fused it."""

    weights: list[float] | None = Field(
        default=None,
        description="The (bm25, vector) weights applied to this query (the response's "
        "fusion_weights); null for a method that weighs none (rrf).",
    )


class RerankOut(Out):
    """A hit's cross-encoder verdict."""

    logit: float
    score: float | None
    relevance: float | None = Field(
        description="Calibrated P(relevant) from the model's calibration "
        "(`sieve calibrate`); null when the model has none."
    )


class HitOut(Out):
    """One search hit with every stage's provenance."""

    doc_id: str
    title: str
    text: str
    snippet: str
    chunk_id: str
    offsets: list[int]
    score: float
    rank: int
    metadata: dict[str, Any]
    bm25: LegOut | None
    vector: LegOut | None
    fused: FusedOut | None
    rerank: RerankOut | None


class SearchOut(Out):
    """``POST /v1/search`` answer."""

    query: str
    mode: Mode
    fusion: str | None
    fusion_weights: list[float] | None = Field(
        description="The (bm25, vector) weights fusion applied; null when one leg answered "
        "(see skipped, degraded) or the method weighs none (rrf)."
    )
    fusion_source: Literal["request", "collection", "setting"] | None = Field(
        default=None,
        description="Where the fusion came from: the request's fusion or weights, the "
        "collection's (adopted by sieve tune), or SIEVE_FUSION / SIEVE_FUSION_WEIGHTS; null "
        "when one leg answered.",
    )
    fusion_signals: dict[str, float] | None = Field(
        default=None,
        description="Adaptive fusion only: the query-time signals its weights came from "
        "(each leg's top-10 score gap, the vector leg's top cosine, the legs' top-10 overlap).",
    )
    fusion_reason: str | None = Field(
        default=None,
        description="Adaptive fusion only: the bm25 share chosen and the signals that moved it.",
    )
    reranked: bool
    rerank_window: int
    rerank_blend: float | None = Field(
        description="Weight of the retrieval prior blended into the rerank order; null: pure."
    )
    rerank_blend_source: Literal["collection", "setting", "card", "default"] | None = Field(
        description="Where the blend weight came from: the collection's (sieve calibrate), "
        "SIEVE_RERANK_BLEND_WEIGHT, the model card's (sieve finetune), or none; null when "
        "not reranked."
    )
    page: int
    top_k: int
    next_cursor: str | None
    total_window: int
    degraded: list[str]
    degraded_reasons: dict[str, str] = Field(
        description="Why each degraded stage degraded (one line each)."
    )
    skipped: dict[str, str]
    cached_scores: int
    timings_ms: dict[str, float]
    hits: list[HitOut]


class ContextChunkOut(Out):
    """A cited span of a document."""

    citation: str
    chunk_ids: list[str]
    offsets: list[int]
    text: str
    tokens: int
    score: float
    truncated: bool


class ContextDocumentOut(Out):
    """A cited document."""

    doc_id: str
    title: str
    citation: int
    chunks: list[ContextChunkOut]


class ContextOut(Out):
    """``POST /v1/context`` answer."""

    query: str
    max_tokens: int
    used_tokens: int
    documents: list[ContextDocumentOut]
    text: str
    format: str
    abstained: bool = Field(
        description="True when min_relevance was given and no passage reached it: the "
        "knowledge base holds nothing relevant enough to cite."
    )
    abstain_reason: str | None
    reranked: bool
    degraded: list[str]
    degraded_reasons: dict[str, str]
    timings_ms: dict[str, float]


class RerankResultOut(Out):
    """One reranked document."""

    index: int
    relevance_score: float
    document: dict[str, Any] | None = Field(
        None, description="With return_documents: the document as sent (a string as {text})."
    )


class RerankOutMeta(Out):
    """Cohere-style usage block."""

    billed_units: dict[str, int]


class RerankUsage(Out):
    """Jina-style usage block."""

    total_tokens: int = Field(
        description="Tokens the model read for this answer (query included in every pair; "
        "a cached score costs none)."
    )


class RerankOutBody(Out):
    """``POST /v1/rerank`` answer."""

    id: str
    model: str = Field(description="The model's public name, or the request's model echoed.")
    results: list[RerankResultOut]
    meta: RerankOutMeta
    usage: RerankUsage
    timings_ms: dict[str, float] = Field(
        default_factory=dict,
        description="The reranker's stages in milliseconds (cache, model, ...); the "
        "Server-Timing header carries them too, with the total.",
    )


class TeiRerankResultOut(Out):
    """One text of a TEI-shaped rerank answer."""

    index: int
    score: float
    text: str | None = None


class TeiRerankOut(RootModel[list[TeiRerankResultOut]]):
    """``POST /rerank`` answer in TEI's shape: the texts best first."""


class AnyRerankOut(RootModel[RerankOutBody | TeiRerankOut]):
    """``POST /rerank`` answer: Cohere's shape, or TEI's for a TEI-shaped request."""


class CollectionOut(Out):
    """A collection with its registry counts."""

    name: str
    documents: int
    chunks: int


class CollectionsOut(Out):
    """``GET /v1/collections`` answer."""

    collections: list[CollectionOut]


class CreatedOut(Out):
    """``POST /v1/collections`` answer."""

    name: str


class DroppedOut(Out):
    """``DELETE /v1/collections/{c}`` answer."""

    deleted: str
    documents: int


class StatsOut(BaseModel):
    """``GET /v1/collections/{c}/stats``: registry counts and each index's (open-ended)."""

    model_config = ConfigDict(extra="allow")

    collection: str
    documents: int
    chunks: int


class TaskAcceptedOut(Out):
    """202 answer of the indexing endpoints."""

    task_id: str


class FileResultOut(Out):
    """What one uploaded file gave."""

    name: str
    state: Literal["accepted", "refused"] = Field(
        description="accepted: it gave at least one document; refused: none (see errors)."
    )
    documents: int = Field(description="Documents read from it and queued.")
    errors: list[str] = Field(description="One line per bad part (a JSONL line, the file).")


class UploadAcceptedOut(TaskAcceptedOut):
    """202 answer of an upload: the task, and each file's result in the order sent."""

    files: list[FileResultOut]


class TaskOut(Out):
    """``GET /v1/tasks/{id}`` answer."""

    id: str
    collection: str
    state: Literal["queued", "running", "done", "failed"]
    total: int
    processed: int
    indexed: int
    unchanged: int
    failed: dict[str, str]
    errors: list[str]
    created_at: float
    finished_at: float | None


class DocumentOut(Out):
    """``GET /v1/collections/{c}/documents/{id}`` answer."""

    id: str
    title: str
    text: str
    metadata: dict[str, Any]
    content_type: str
    version: int
    status: str
    chunks: int
    error: str | None
    updated_at: str | None


class DocumentSummaryOut(Out):
    """One document of a listing."""

    id: str
    title: str
    status: Literal["pending", "indexed", "failed"]
    chunks: int
    error: str | None = Field(description="Why indexing failed (status failed), else null.")
    updated_at: str


class DocumentListOut(Out):
    """``GET /v1/collections/{c}/documents`` answer: one page in id order."""

    documents: list[DocumentSummaryOut]
    next_after: str | None = Field(
        description="Pass as `after` for the next page; null on the last page."
    )


class ChunkOut(Out):
    """One chunk of a document's text, and whether each index holds it."""

    id: str
    ordinal: int
    start: int = Field(description="Character offset into the cleaned text.")
    end: int
    preview: str = Field(description="The chunk's text, cut after 240 characters (…).")
    chars: int = Field(description="Length of the chunk's whole text.")
    tokens: int = Field(description="BM25 terms indexed for the chunk, the title's included.")
    indexes: dict[Literal["keyword", "vector"], bool] = Field(
        description="Per index: whether it holds this chunk at the registry's version."
    )


class IndexDifferenceOut(Out):
    """Chunk ids of the document on which one index differs from the registry's text."""

    missing: list[str]
    stale: list[str] = Field(description="Held at another version than the registry's.")
    orphans: list[str] = Field(description="Held by the index, not made by the text.")


class DocumentChunksOut(Out):
    """``GET /v1/collections/{c}/chunks?doc_id=ID`` answer."""

    doc_id: str
    version: int
    error: str | None = Field(description="Why the text makes no chunks, else null.")
    chunks: list[ChunkOut]
    indexes: dict[Literal["keyword", "vector"], IndexDifferenceOut]


class DeletedOut(Out):
    """Delete answers; ``not_found`` only for the batch delete."""

    deleted: list[str]
    not_found: list[str] = Field(default_factory=list)


class HealthOut(Out):
    """``GET /healthz`` answer."""

    status: str


class RerankerStatusOut(Out):
    """The reranker in use, or why there is none and the one fix (``search.rerank.status``)."""

    active: bool
    model: str
    backend: str
    fingerprint: str = Field(description="Short hash of the model's files; empty if not here.")
    device: str
    dtype: str
    runtime: str = Field(
        description="What runs the model: torch, onnx or onnx-int8 (ONNX Runtime on the CPU); "
        "planned from the settings until it loads, empty for a reranker of unknown kind."
    )
    loaded: bool = Field(description="Whether the model is loaded yet (it loads on first use).")
    calibrated: bool = Field(description="A calibration keyed to this model's fingerprint exists.")
    blend_weight: float
    blend_source: str = Field(description="Where the blend weight comes from.")
    reason: Literal["", "off", "missing", "load_failed", "no_worker"] = Field(
        description="Why there is no reranker; empty when one is active."
    )
    why: str
    fix: str = Field(description="The one command that gives this server a reranker.")


class ReadyOut(Out):
    """``GET /readyz`` answer."""

    ready: bool
    backends: dict[str, str]
    warm_up: dict[str, str] = Field(
        description="Each part `sieve serve` loads before it is ready (dictionary, embedder, "
        "reranker): `loading`, `ok`, `error: ...`, or `lazy` (loads on first use)."
    )
    reranker_status: RerankerStatusOut


class ErrorBody(Out):
    """The error object."""

    code: str
    message: str
    details: dict[str, Any]


class ErrorOut(Out):
    """Every error answer."""

    error: ErrorBody
