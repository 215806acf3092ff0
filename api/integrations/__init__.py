"""Retrievers for LLM frameworks, backed by a Sieve server through ``api.client``.

- ``api.integrations.langchain.SieveRetriever`` (``pip install sieve-search[langchain]``)
- ``api.integrations.llamaindex.SieveLlamaRetriever`` (``pip install sieve-search[llamaindex]``)

and rerankers that send any retriever's results to ``POST /v1/rerank``:

- ``api.integrations.langchain.SieveReranker`` (a ``BaseDocumentCompressor``)
- ``api.integrations.llamaindex.SieveNodeReranker`` (a ``BaseNodePostprocessor``)

Importing this package needs neither framework; each module imports its own
when it is imported, and says which extra to install when it is missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr

from api.client import SieveClient

# Keys a hit's provenance adds to a framework document's metadata. They win over
# a document metadata field of the same name: a user field called "score" must
# not pass itself off as the search score.
PROVENANCE_KEYS = ("doc_id", "title", "score", "rank", "chunk_id", "offsets")


def hit_metadata(hit: Mapping[str, Any]) -> dict[str, Any]:
    """A search hit's document metadata plus its provenance (``PROVENANCE_KEYS``)."""
    out: dict[str, Any] = dict(hit.get("metadata") or {})
    out.update({key: hit.get(key) for key in PROVENANCE_KEYS})
    return out


def missing_extra(framework: str, extra: str) -> str:
    """The message of the ImportError raised when an optional framework is absent."""
    return (
        f"this Sieve integration needs {framework}, which is not installed: "
        f"pip install sieve-search[{extra}]"
    )


# The metadata key of the rerank score in LangChain documents (the key LangChain's
# own rerank compressors use, so downstream code written for them keeps working).
RERANK_SCORE_KEY = "relevance_score"
# The metadata key of the calibrated P(relevant), present when the server's model has
# a calibration (``sieve calibrate``): the number to threshold on, unlike the score.
RELEVANCE_KEY = "relevance"


class SieveConnection(BaseModel):
    """Where a framework component finds its Sieve server (mixed into each component).

    Building one is cheap: the HTTP connection is made on the first call.
    """

    base_url: str
    api_key: str | None = Field(default=None, repr=False)
    timeout: float = Field(default=30.0, gt=0)

    _client: SieveClient = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        """Make the (lazy, thread-safe) client once the fields are validated."""
        super().model_post_init(context)
        self._client = SieveClient(self.base_url, self.api_key, self.timeout)

    @property
    def client(self) -> SieveClient:
        """The ``SieveClient`` this component calls."""
        return self._client


@dataclass(frozen=True)
class Reranked:
    """One reranked text: where it was in the input, its score, its calibrated relevance."""

    index: int
    score: float  # relevance_score: the sigmoid of the cross-encoder's logit
    relevance: float | None  # P(relevant) when the server's model is calibrated, else None

    def metadata(self) -> dict[str, float]:
        """The keys a reranked document's metadata gains."""
        out = {RERANK_SCORE_KEY: self.score}
        if self.relevance is not None:
            out[RELEVANCE_KEY] = self.relevance
        return out


def rerank_order(
    client: SieveClient, query: str, texts: Sequence[str], top_n: int | None
) -> list[Reranked]:
    """The texts best first, as the server's ``/v1/rerank`` ranks them.

    No texts: no request (the API refuses an empty list) and no results. An error
    answer is raised as ``SieveAPIError`` naming the status, code and message.
    """
    if not texts:
        return []
    answer = client.rerank(query, list(texts), top_n=top_n)
    return [
        Reranked(
            int(r["index"]),
            float(r["relevance_score"]),
            None if r.get("relevance") is None else float(r["relevance"]),
        )
        for r in answer["results"]
    ]
