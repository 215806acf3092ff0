"""LlamaIndex components over a Sieve server: ``SieveLlamaRetriever`` and ``SieveNodeReranker``.

::

    from api.integrations.llamaindex import SieveLlamaRetriever

    retriever = SieveLlamaRetriever("http://127.0.0.1:8000", top_k=5)
    nodes = retriever.retrieve("how to stop a nosebleed")

Each hit becomes ``NodeWithScore(node=TextNode(...), score=hit["score"])``: the
node's id is the chunk id, its source is the Sieve document (``node.ref_doc_id``),
and its metadata holds the hit's provenance over the document's own metadata
(the provenance keys are hidden from the LLM and embedding views of the node).

``SieveNodeReranker`` is a node postprocessor: it reranks any retriever's nodes
with the server's ``POST /v1/rerank``, e.g. in a query engine::

    reranker = SieveNodeReranker(base_url="http://127.0.0.1:8000", top_n=3)
    engine = RetrieverQueryEngine.from_args(retriever, node_postprocessors=[reranker])

Needs ``llama-index-core`` (``pip install sieve-search[llamaindex]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from api.client import SieveClient
from api.integrations import (
    PROVENANCE_KEYS,
    RELEVANCE_KEY,
    SieveConnection,
    hit_metadata,
    missing_extra,
    rerank_order,
)

try:
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import (
        MetadataMode,
        NodeRelationship,
        NodeWithScore,
        QueryBundle,
        RelatedNodeInfo,
        TextNode,
    )
except ImportError as exc:  # pragma: no cover - exercised with llama-index hidden
    raise ImportError(missing_extra("llama-index-core", "llamaindex")) from exc

__all__ = ["SieveLlamaRetriever", "SieveNodeReranker"]

# Provenance an LLM prompt or an embedding of the node has no use for.
HIDDEN_KEYS = [key for key in PROVENANCE_KEYS if key not in ("doc_id", "title")]


class SieveLlamaRetriever(BaseRetriever):
    """Retrieves nodes with ``POST /v1/search`` of a Sieve server.

    ``mode``, ``filters`` and ``rerank`` left as None use the server's defaults.
    Building one is cheap: the HTTP connection is made on the first query.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        collection: str = "default",
        top_k: int = 10,
        mode: str | None = None,
        filters: Mapping[str, Any] | None = None,
        rerank: bool | None = None,
        timeout: float = 30.0,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if not 1 <= top_k <= 100:
            raise ValueError(f"top_k must be from 1 to 100 (the API's cap); got {top_k}")
        self.client = SieveClient(base_url, api_key, timeout)
        self.collection = collection
        self.top_k = top_k
        self.mode = mode
        self.filters = dict(filters) if filters is not None else None
        self.rerank = rerank
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        answer = self.client.search(
            query_bundle.query_str,
            collection=self.collection,
            mode=self.mode,
            top_k=self.top_k,
            filters=self.filters,
            rerank=self.rerank,
        )
        return [to_node(hit) for hit in answer["hits"]]


def to_node(hit: Mapping[str, Any]) -> NodeWithScore:
    """One search hit as a scored ``TextNode`` (id: the chunk id; source: the document)."""
    node = TextNode(
        text=hit["text"],
        id_=hit["chunk_id"],
        metadata=hit_metadata(hit),
        excluded_llm_metadata_keys=list(HIDDEN_KEYS),
        excluded_embed_metadata_keys=list(HIDDEN_KEYS),
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=hit["doc_id"])},
    )
    return NodeWithScore(node=node, score=hit["score"])


class SieveNodeReranker(SieveConnection, BaseNodePostprocessor):
    """Reranks nodes with ``POST /v1/rerank`` of a Sieve server, best first.

    Each node comes back as a new ``NodeWithScore`` whose ``score`` is the
    server's ``relevance_score``; ``top_n`` None keeps them all. The node is the
    same one (metadata and relationships untouched) unless the server's model is
    calibrated: then it is a copy whose metadata adds the calibrated P(relevant)
    under ``"relevance"`` (hidden from the LLM and embedding views). The text sent
    is the node's content in ``metadata_mode`` (default: the text alone, what a
    cross-encoder is trained on). An error answer is raised as
    ``api.client.SieveAPIError``.
    """

    top_n: int | None = Field(default=None, ge=1)
    metadata_mode: MetadataMode = MetadataMode.NONE

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serialises this component under."""
        return "SieveNodeReranker"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("SieveNodeReranker needs the query (query_bundle or query_str)")
        texts = [n.node.get_content(metadata_mode=self.metadata_mode) for n in nodes]
        out = []
        for ranked in rerank_order(self.client, query_bundle.query_str, texts, self.top_n):
            node = nodes[ranked.index].node
            if ranked.relevance is not None:
                node = node.model_copy(
                    update={
                        "metadata": {**node.metadata, RELEVANCE_KEY: ranked.relevance},
                        "excluded_llm_metadata_keys": [
                            *node.excluded_llm_metadata_keys,
                            RELEVANCE_KEY,
                        ],
                        "excluded_embed_metadata_keys": [
                            *node.excluded_embed_metadata_keys,
                            RELEVANCE_KEY,
                        ],
                    }
                )
            out.append(NodeWithScore(node=node, score=ranked.score))
        return out
