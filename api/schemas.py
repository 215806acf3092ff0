"""Pydantic models of the HTTP API: request validation and the OpenAPI document.

Requests are parsed with ``model_validate_json`` in strict mode: ``"top_k": "5"``
is a 422, not a quiet 5, and an unknown field is a 422 (``extra="forbid"``).
Response models are documentation (``api/openapi.py``): views build plain
dicts, and the schemathesis test checks that they agree.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from search.config import COLLECTION_PATTERN
from search.fusion import FusionMethod
from search.request import (
    MAX_FILTERS,
    MAX_QUERY_CHARS,
    MAX_RELEVANCE,
    MAX_RERANK_DEPTH,
    MAX_TOP_K,
    MAX_WEIGHT,
    MAX_WINDOW,
)
from search.rerank.pairs import MAX_DOC_TOKENS
from search.types import ContentType, MetaValue, Mode

# Every limit and choice below comes from the engine's request contract
# (search/request.py); tests/unit/test_request_contract.py checks they agree.
CollectionName = Annotated[str, StringConstraints(pattern=COLLECTION_PATTERN)]
Query = Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUERY_CHARS)]
DocId = Annotated[str, StringConstraints(min_length=1, max_length=512)]
Weight = Annotated[float, Field(ge=0.0, le=MAX_WEIGHT, allow_inf_nan=False)]
Filters = Annotated[dict[str, MetaValue], Field(max_length=MAX_FILTERS)]
MinRelevance = Annotated[
    float,
    Field(
        ge=0.0,
        le=MAX_RELEVANCE,
        allow_inf_nan=False,
        description="Keep only reranked hits whose calibrated relevance (P(relevant)) is at "
        "least this. Needs a calibration of the reranker model (`sieve calibrate`): "
        "without one the request is a 422.",
    ),
]


class Strict(BaseModel):
    """Base of request models: unknown fields and type coercion are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Out(BaseModel):
    """Base of response models (documentation only)."""

    model_config = ConfigDict(extra="forbid")


# -- requests -------------------------------------------------------------


class SearchBody(Strict):
    """``POST /v1/search``."""

    query: Query
    collection: CollectionName = "default"
    mode: Mode = "hybrid"
    top_k: int = Field(10, ge=1, le=MAX_TOP_K)
    filters: Filters | None = None
    fusion: FusionMethod | None = None
    weights: tuple[Weight, Weight] | None = None
    rerank: bool | None = None
    rerank_depth: int | None = Field(None, ge=1, le=MAX_RERANK_DEPTH)
    cursor: str | None = Field(None, min_length=1, max_length=4096)
    page: int | None = Field(None, ge=1, le=MAX_WINDOW)
    min_relevance: MinRelevance | None = None

    @model_validator(mode="after")
    def _page_or_cursor(self) -> SearchBody:
        if self.page is not None and self.cursor is not None:
            raise ValueError("give page or cursor, not both")
        return self


class ContextBody(Strict):
    """``POST /v1/context``."""

    query: Query
    collection: CollectionName = "default"
    max_tokens: int = Field(1500, ge=32, le=100_000)
    top_k: int = Field(20, ge=1, le=MAX_TOP_K)
    filters: Filters | None = None
    format: Literal["markdown", "text"] = "markdown"
    # With it, an answer with no passage left abstains (``abstained: true``).
    min_relevance: MinRelevance | None = None


class RerankDocument(Strict):
    """A document to rerank, as an object."""

    text: str


# A field of a rerank document object: ranked as its text (see api/rerank_shapes.py).
RerankDocumentObject = dict[str, Any]
MAX_RANK_FIELDS = 32


class RerankBody(Strict):
    """``POST /v1/rerank`` (the Cohere v1/v2 and Jina shape)."""

    model: str | None = Field(None, max_length=256)
    query: Query
    documents: list[str | RerankDocumentObject] = Field(
        min_length=1,
        description="Strings, or objects whose `rank_fields` (default: `text`) are ranked.",
    )
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False
    rank_fields: list[Annotated[str, StringConstraints(min_length=1)]] | None = Field(
        None,
        min_length=1,
        max_length=MAX_RANK_FIELDS,
        description="Fields of object documents to rank, in order; one field is ranked as its "
        "value, several as `field: value` lines.",
        examples=[["title", "text"]],
    )
    max_tokens_per_doc: int | None = Field(
        None,
        ge=1,
        le=MAX_DOC_TOKENS,
        description=f"Score only each document's first n tokens (default and most: "
        f"{MAX_DOC_TOKENS}).",
    )
    # Cohere v1's legacy option: Sieve already scores every document by its
    # best window, so it changes nothing (docs/api.md says so).
    max_chunks_per_doc: int | None = Field(None, ge=1)
    priority: int | None = None
    relevant_spans: Any = Field(
        None,
        description='Cohere\'s relevant spans (`{"mode": "enabled"}`, Rerank 5 models '
        "only): not supported; null, false or mode `disabled` only.",
    )

    @field_validator("relevant_spans")
    @classmethod
    def _no_spans(cls, value: Any) -> Any:
        # Cohere's shape is {"mode": "enabled" | "disabled", ...}: "disabled" asks for nothing.
        off = value in (None, False) or (
            isinstance(value, dict) and value.get("mode") == "disabled"
        )
        if not off:
            raise PydanticCustomError(
                "unsupported",
                "not supported by Sieve's reranker (leave it out; each result's score is "
                "its document's best window)",
            )
        return value


class TeiRerankBody(Strict):
    """``POST /rerank`` in Hugging Face text-embeddings-inference's shape (``texts``)."""

    query: Query
    texts: list[str] = Field(min_length=1)
    raw_scores: bool = Field(False, description="Answer the raw logits, not their sigmoid.")
    return_text: bool = False
    truncate: bool | None = Field(
        None,
        description="Accepted: long texts are never refused, each is scored by its best "
        f"window over its first {MAX_DOC_TOKENS} tokens.",
    )
    truncation_direction: Literal["right", "Right"] = "right"


class AnyRerankBody(RootModel[RerankBody | TeiRerankBody]):
    """``POST /rerank``: the Cohere shape, or TEI's when the body has ``texts``."""


class CollectionBody(Strict):
    """``POST /v1/collections``."""

    name: CollectionName


class DocumentFields(Strict):
    """A document's content (``PUT .../documents/{id}``)."""

    text: str
    title: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    content_type: ContentType = "text"


class DocumentBody(DocumentFields):
    """One document of a batch."""

    id: DocId


class DocumentsBody(Strict):
    """``POST /v1/collections/{c}/documents``."""

    documents: list[DocumentBody] = Field(min_length=1)


class DeleteBody(Strict):
    """``POST /v1/collections/{c}/documents:delete``; an empty list deletes nothing (422)."""

    ids: list[DocId] = Field(min_length=1)


# -- responses ------------------------------------------------------------


class LegOut(Out):
    """A hit's place in one stage."""

    score: float
    rank: int


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
    fused: LegOut | None
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
    reranker_status: RerankerStatusOut


class ErrorBody(Out):
    """The error object."""

    code: str
    message: str
    details: dict[str, Any]


class ErrorOut(Out):
    """Every error answer."""

    error: ErrorBody
