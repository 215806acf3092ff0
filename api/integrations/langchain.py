"""LangChain components over a Sieve server: ``SieveRetriever`` and ``SieveReranker``.

::

    from api.integrations.langchain import SieveRetriever

    retriever = SieveRetriever(base_url="http://127.0.0.1:8000", top_k=5)
    docs = retriever.invoke("how to stop a nosebleed")

Each hit becomes a ``Document`` whose ``page_content`` is the passage and whose
metadata holds the hit's provenance (doc_id, title, score, rank, chunk_id,
offsets) over the document's own metadata.

``SieveReranker`` is a document compressor: it reranks any retriever's documents
with the server's ``POST /v1/rerank``, e.g. inside LangChain's
``ContextualCompressionRetriever(base_compressor=SieveReranker(...), base_retriever=...)``::

    reranker = SieveReranker(base_url="http://127.0.0.1:8000", top_n=3)
    best = reranker.compress_documents(docs, "how to stop a nosebleed")

Needs ``langchain-core`` (``pip install sieve-search[langchain]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import ConfigDict, Field

from api.integrations import SieveConnection, hit_metadata, missing_extra, rerank_order

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun, Callbacks
    from langchain_core.documents import Document
    from langchain_core.documents.compressor import BaseDocumentCompressor
    from langchain_core.retrievers import BaseRetriever
except ImportError as exc:  # pragma: no cover - exercised with langchain hidden
    raise ImportError(missing_extra("langchain-core", "langchain")) from exc

__all__ = ["SieveReranker", "SieveRetriever"]


class SieveRetriever(SieveConnection, BaseRetriever):
    """Retrieves passages with ``POST /v1/search`` of a Sieve server.

    ``mode``, ``filters`` and ``rerank`` left as None use the server's defaults
    (hybrid; no filter; rerank when the server has a reranker).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    collection: str = "default"
    top_k: int = Field(default=10, ge=1, le=100)
    mode: Literal["bm25", "vector", "hybrid"] | None = None
    filters: dict[str, Any] | None = None
    rerank: bool | None = None

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        answer = self.client.search(
            query,
            collection=self.collection,
            mode=self.mode,
            top_k=self.top_k,
            filters=self.filters,
            rerank=self.rerank,
        )
        return [
            Document(page_content=hit["text"], metadata=hit_metadata(hit)) for hit in answer["hits"]
        ]


class SieveReranker(SieveConnection, BaseDocumentCompressor):
    """Reranks documents with ``POST /v1/rerank`` of a Sieve server, best first.

    Each document comes back as a copy with its metadata kept and the server's
    ``relevance_score`` (the sigmoid of the cross-encoder's logit) added under
    ``metadata["relevance_score"]``, and, when the server's model is calibrated,
    the calibrated P(relevant) under ``metadata["relevance"]``. ``top_n`` None
    keeps them all. An error answer (no reranker on the server, a bad key, too
    many documents) is raised as ``api.client.SieveAPIError``, never swallowed
    into the original order.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    top_n: int | None = Field(default=None, ge=1)

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """``documents`` reordered by the server's reranker, at most ``top_n`` of them."""
        texts = [doc.page_content for doc in documents]
        out = []
        for ranked in rerank_order(self.client, query, texts, self.top_n):
            doc = documents[ranked.index]
            metadata = {**doc.metadata, **ranked.metadata()}
            out.append(doc.model_copy(update={"metadata": metadata}))
        return out
