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
from typing import Any

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


def rerank_order(
    client: SieveClient, query: str, texts: Sequence[str], top_n: int | None
) -> list[tuple[int, float]]:
    """``(index into texts, relevance_score)`` best first, from the server's ``/v1/rerank``.

    No texts: no request (the API refuses an empty list) and no results. An error
    answer is raised as ``SieveAPIError`` naming the status, code and message.
    """
    if not texts:
        return []
    answer = client.rerank(query, list(texts), top_n=top_n)
    return [(int(r["index"]), float(r["relevance_score"])) for r in answer["results"]]
