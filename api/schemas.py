"""Pydantic models of the HTTP API's requests: validation and the OpenAPI document.

Requests are parsed with ``model_validate_json`` in strict mode: ``"top_k": "5"``
is a 422, not a quiet 5, and an unknown field is a 422 (``extra="forbid"``).
Every field has a description and every body an example (``examples`` in its
JSON schema, the try-it-out console's starting request);
``tests/api/test_api_ops.py`` sends each example to the API. Answers are
documented in ``api/responses.py``.
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
MinRelevance = Annotated[float, Field(ge=0.0, le=MAX_RELEVANCE, allow_inf_nan=False)]
MIN_RELEVANCE_TEXT = (
    "Keep only reranked hits whose calibrated relevance (P(relevant)) is at least this. "
    "Needs a calibration of the reranker model (`sieve calibrate`): without one the "
    "request is a 422."
)


class Strict(BaseModel):
    """Base of request models: unknown fields and type coercion are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)


# -- requests -------------------------------------------------------------


def examples(*bodies: dict[str, Any]) -> ConfigDict:
    """A strict model's config with ``bodies`` as its JSON schema's examples."""
    return ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": list(bodies)})


class SearchBody(Strict):
    """``POST /v1/search``."""

    model_config = examples(
        {"query": "how to stop a nosebleed", "top_k": 5},
        {
            "query": "how to stop a nosebleed",
            "collection": "default",
            "mode": "hybrid",
            "top_k": 10,
            "filters": {"lang": "en"},
            "rerank": True,
            "rerank_depth": 50,
        },
    )

    query: Query = Field(description="What to search for, in any language the indexes serve.")
    collection: CollectionName = Field("default", description="The collection to search.")
    mode: Mode = Field(
        "hybrid", description="`bm25` (keywords), `vector` (embeddings) or `hybrid` (both, fused)."
    )
    top_k: int = Field(10, ge=1, le=MAX_TOP_K, description="Hits per page.")
    filters: Filters | None = Field(
        None,
        description="Metadata equality filters: a document passes when each key's value "
        "equals the one given, or is one of a list given.",
        examples=[{"lang": "en", "topic": ["first-aid", "it-help"]}],
    )
    fusion: FusionMethod | None = Field(
        None, description="How hybrid merges its two legs; null: the server's default."
    )
    weights: tuple[Weight, Weight] | None = Field(
        None, description="[bm25, vector] weights of the fusion; null: the server's default."
    )
    rerank: bool | None = Field(
        None,
        description="Rerank the top of the fused list with the cross-encoder; null: when the "
        "server has a reranker. True without one answers in fused order, degraded.",
    )
    rerank_depth: int | None = Field(
        None,
        ge=1,
        le=MAX_RERANK_DEPTH,
        description="How many fused candidates the reranker reads (the window every page is "
        "cut from); null: SIEVE_RERANK_DEPTH.",
    )
    cursor: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="The previous answer's next_cursor, for the next page.",
    )
    page: int | None = Field(
        None, ge=1, le=MAX_WINDOW, description="Page number (1-based), instead of a cursor."
    )
    min_relevance: MinRelevance | None = Field(None, description=MIN_RELEVANCE_TEXT)

    @model_validator(mode="after")
    def _page_or_cursor(self) -> SearchBody:
        if self.page is not None and self.cursor is not None:
            raise ValueError("give page or cursor, not both")
        return self


class ContextBody(Strict):
    """``POST /v1/context``."""

    model_config = examples(
        {"query": "how to stop a nosebleed", "max_tokens": 600},
        {"query": "how to stop a nosebleed", "max_tokens": 1500, "format": "text"},
    )

    query: Query = Field(description="The question the context is for.")
    collection: CollectionName = Field("default", description="The collection to search.")
    max_tokens: int = Field(
        1500, ge=32, le=100_000, description="Token budget of the context's text."
    )
    top_k: int = Field(
        20, ge=1, le=MAX_TOP_K, description="Hits searched (and reranked as configured)."
    )
    filters: Filters | None = Field(None, description="Metadata filters, as on /v1/search.")
    format: Literal["markdown", "text"] = Field(
        "markdown", description="The context's text: markdown sections or plain text."
    )
    # With it, an answer with no passage left abstains (``abstained: true``).
    min_relevance: MinRelevance | None = Field(None, description=MIN_RELEVANCE_TEXT)


# A field of a rerank document object: ranked as its text (see api/rerank_shapes.py).
RerankDocumentObject = dict[str, Any]
MAX_RANK_FIELDS = 32


class RerankBody(Strict):
    """``POST /v1/rerank`` (the Cohere v1/v2 and Jina shape)."""

    model_config = examples(
        {
            "query": "how to stop a nosebleed",
            "documents": [
                "Pinch the soft part of the nose and lean forward for ten minutes.",
                "Nosebleed statistics by season and region.",
            ],
            "top_n": 1,
        },
        {
            "query": "how to stop a nosebleed",
            "documents": [
                {"title": "First aid", "text": "Pinch the soft part of the nose, lean forward."},
                {"title": "Seasons", "text": "Nosebleeds are more common in dry winters."},
            ],
            "rank_fields": ["title", "text"],
            "return_documents": True,
        },
    )

    model: str | None = Field(
        None,
        max_length=256,
        description="Accepted for client compatibility and echoed; the server's reranker "
        "answers whatever is named.",
    )
    query: Query = Field(description="The query every document is scored against.")
    documents: list[str | RerankDocumentObject] = Field(
        min_length=1,
        description="Strings, or objects whose `rank_fields` (default: `text`) are ranked.",
    )
    top_n: int | None = Field(None, ge=1, description="Answer the best n; null: all.")
    return_documents: bool = Field(
        False, description="Include each document, as sent, in its result."
    )
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
    max_chunks_per_doc: int | None = Field(
        None, ge=1, description="Cohere v1's option; accepted, changes nothing."
    )
    priority: int | None = Field(None, description="Cohere's option; accepted, ignored.")
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

    model_config = examples(
        {
            "query": "how to stop a nosebleed",
            "texts": [
                "Pinch the soft part of the nose and lean forward for ten minutes.",
                "Nosebleed statistics by season and region.",
            ],
        },
    )

    query: Query = Field(description="The query every text is scored against.")
    texts: list[str] = Field(min_length=1, description="The texts to rerank.")
    raw_scores: bool = Field(False, description="Answer the raw logits, not their sigmoid.")
    return_text: bool = Field(False, description="Include each text in its result.")
    truncate: bool | None = Field(
        None,
        description="Accepted: long texts are never refused, each is scored by its best "
        f"window over its first {MAX_DOC_TOKENS} tokens.",
    )
    truncation_direction: Literal["right", "Right"] = Field(
        "right", description="TEI's option; only `right` (keep the start) is served."
    )


class AnyRerankBody(RootModel[RerankBody | TeiRerankBody]):
    """``POST /rerank``: the Cohere shape, or TEI's when the body has ``texts``."""


class CollectionBody(Strict):
    """``POST /v1/collections``."""

    model_config = examples({"name": "handbook"})

    name: CollectionName = Field(description="The new collection's name.")


class DocumentFields(Strict):
    """A document's content (``PUT .../documents/{id}``)."""

    model_config = examples(
        {
            "title": "Nosebleed first aid",
            "text": "Sit up, lean forward and pinch the soft part of the nose for ten minutes.",
            "metadata": {"lang": "en", "topic": "first-aid"},
        },
    )

    text: str = Field(description="The document's text (or markdown, or HTML).")
    title: str = Field("", description="Shown with its hits and cited in /v1/context.")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Any JSON fields; scalar ones can be filtered on."
    )
    content_type: ContentType = Field(
        "text",
        description="How to read `text`: `html` keeps only the page's main content, "
        "`markdown` keeps headings for chunking.",
    )


class DocumentBody(DocumentFields):
    """One document of a batch."""

    model_config = examples(
        {"id": "nosebleed", "title": "Nosebleed first aid", "text": "Lean forward, pinch."},
    )

    id: DocId = Field(description="The document's id; indexing the same id replaces it.")


class DocumentsBody(Strict):
    """``POST /v1/collections/{c}/documents``."""

    model_config = examples(
        {
            "documents": [
                {
                    "id": "nosebleed",
                    "title": "Nosebleed first aid",
                    "text": "Sit up, lean forward and pinch the soft part of the nose.",
                    "metadata": {"lang": "en"},
                }
            ]
        },
    )

    documents: list[DocumentBody] = Field(min_length=1, description="The documents to index.")


class DeleteBody(Strict):
    """``POST /v1/collections/{c}/documents:delete``; an empty list deletes nothing (422)."""

    model_config = examples({"ids": ["nosebleed"]})

    ids: list[DocId] = Field(
        min_length=1, description="Ids to delete; unknown ones are listed in not_found."
    )
