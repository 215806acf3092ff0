"""The LangChain and LlamaIndex rerankers against a running Sieve app over real HTTP.

``live_server`` (tests/support/live_server.py) serves the sample corpus with the
tiny random cross-encoder: its order is meaningless but deterministic, so each
component's order and scores are checked against the server's own ``/v1/rerank``
answer for the same texts. The documents come from the framework's own pieces
(a LangChain retriever in a runnable chain, a LlamaIndex query engine).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.client import SieveAPIError, SieveClient

pytestmark = pytest.mark.integration

QUERY = "how do I clean a cast iron skillet"


def _server_order(url: str, texts: list[str], top_n: int) -> list[tuple[int, float]]:
    answer = SieveClient(url).rerank(QUERY, texts, top_n=top_n)
    return [(r["index"], r["relevance_score"]) for r in answer["results"]]


@pytest.fixture(scope="module")
def calibrated_url(live_server, tiny_reranker_dir: Path, tmp_path_factory) -> Iterator[str]:
    """A second app over the sample's indexes whose reranker (a copy of the tiny model)
    has a calibration: Platt with a = 2, b = -1, so relevance = sigmoid(2 * logit - 1)."""
    from support.live_server import serve

    from api.app import create_app
    from api.settings import ApiSettings, ServiceSettings
    from api.state import EXTENSION
    from search.engine import SearchEngine
    from search.models import LocatedModel
    from search.rerank import CrossEncoderReranker
    from search.rerank.calibration import Calibration, save_calibration

    models = tmp_path_factory.mktemp("calibrated-models")
    folder = Path(shutil.copytree(tiny_reranker_dir, models / "tiny-calibrated"))
    fingerprint = LocatedModel("tiny-calibrated", folder, "path").fingerprint
    save_calibration(Calibration("platt", fingerprint, a=2.0, b=-1.0), folder)
    settings = live_server.engine.settings
    reranker = CrossEncoderReranker(str(folder), models_dir=models)
    engine = SearchEngine(settings, embedder=live_server.engine.embedder, reranker=reranker)
    app = create_app(ServiceSettings(engine=settings, api=ApiSettings(rate_limit="")), engine)
    try:
        with serve(app) as url:
            yield url
    finally:
        app.extensions[EXTENSION].jobs.close()


def _relevance(url: str, texts: list[str]) -> dict[int, float]:
    answer = SieveClient(url).rerank(QUERY, texts)
    return {r["index"]: r["relevance"] for r in answer["results"]}


def test_langchain_reranker_inside_contextual_compression(live_server, calibrated_url) -> None:
    pytest.importorskip("langchain_classic", reason="langchain-classic is not installed")
    from langchain_classic.retrievers import ContextualCompressionRetriever

    from api.integrations.langchain import SieveReranker, SieveRetriever

    base = SieveRetriever(base_url=live_server.url, top_k=8, rerank=False)
    compressed = ContextualCompressionRetriever(
        base_compressor=SieveReranker(base_url=calibrated_url, top_n=4), base_retriever=base
    )
    docs = compressed.invoke(QUERY)
    retrieved = base.invoke(QUERY)
    texts = [d.page_content for d in retrieved]
    expected = _server_order(calibrated_url, texts, 4)
    relevance = _relevance(calibrated_url, texts)
    assert [d.page_content for d in docs] == [texts[i] for i, _ in expected]
    for doc, (index, score) in zip(docs, expected, strict=True):
        assert doc.metadata["doc_id"] == retrieved[index].metadata["doc_id"]
        assert doc.metadata["relevance_score"] == pytest.approx(score)
        assert doc.metadata["relevance"] == pytest.approx(relevance[index])
    assert {d.metadata["relevance"] for d in docs} != {d.metadata["relevance_score"] for d in docs}
    # Without a calibration on the server the key is absent, never a made-up number.
    plain = ContextualCompressionRetriever(
        base_compressor=SieveReranker(base_url=live_server.url, top_n=4), base_retriever=base
    ).invoke(QUERY)
    assert len(plain) == 4 and all("relevance" not in d.metadata for d in plain)


def test_llamaindex_reranker_carries_the_calibrated_relevance(live_server, calibrated_url) -> None:
    pytest.importorskip("llama_index.core", reason="llama-index-core is not installed")
    from llama_index.core.schema import MetadataMode

    from api.integrations.llamaindex import SieveLlamaRetriever, SieveNodeReranker

    retrieved = SieveLlamaRetriever(live_server.url, top_k=6, rerank=False).retrieve(QUERY)
    nodes = SieveNodeReranker(base_url=calibrated_url, top_n=3).postprocess_nodes(
        retrieved, query_str=QUERY
    )
    texts = [n.node.get_content() for n in retrieved]
    relevance = _relevance(calibrated_url, texts)
    for got in nodes:
        index = texts.index(got.node.get_content())
        assert got.node.metadata["relevance"] == pytest.approx(relevance[index])
        assert "relevance" not in retrieved[index].node.metadata  # a copy, not the input
        assert "relevance" not in got.node.get_content(metadata_mode=MetadataMode.LLM)


def test_langchain_reranker_in_a_chain_keeps_metadata_and_adds_the_score(live_server) -> None:
    pytest.importorskip("langchain_core", reason="langchain-core is not installed")
    from langchain_core.documents import Document
    from langchain_core.runnables import RunnableLambda

    from api.integrations.langchain import SieveReranker, SieveRetriever

    retriever = SieveRetriever(base_url=live_server.url, top_k=6, rerank=False)
    reranker = SieveReranker(base_url=live_server.url, top_n=3)
    retrieved = retriever.invoke(QUERY)
    chain = retriever | RunnableLambda(lambda docs: reranker.compress_documents(docs, QUERY))
    reranked = chain.invoke(QUERY)

    expected = _server_order(live_server.url, [d.page_content for d in retrieved], 3)
    assert len(reranked) == 3 and all(isinstance(d, Document) for d in reranked)
    for doc, (index, score) in zip(reranked, expected, strict=True):
        source = retrieved[index]
        assert doc.page_content == source.page_content
        assert doc.metadata == {**source.metadata, "relevance_score": pytest.approx(score)}
    assert "relevance_score" not in retrieved[0].metadata  # the inputs are not mutated
    assert reranker.compress_documents([], QUERY) == []
    every = SieveReranker(base_url=live_server.url).compress_documents(retrieved, QUERY)
    assert len(every) == len(retrieved)


def test_langchain_reranker_raises_the_servers_error(live_server) -> None:
    pytest.importorskip("langchain_core", reason="langchain-core is not installed")
    from langchain_core.documents import Document

    from api.integrations.langchain import SieveReranker

    with pytest.raises(ValueError, match="top_n"):
        SieveReranker(base_url=live_server.url, top_n=0)
    with pytest.raises(SieveAPIError, match=r"^422 invalid_request: query") as caught:
        SieveReranker(base_url=live_server.url).compress_documents([Document("x")], "")
    assert caught.value.status == 422


def test_llamaindex_reranker_in_a_query_engine(
    live_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("llama_index.core", reason="llama-index-core is not installed")
    from llama_index.core import Settings
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.core.response_synthesizers import get_response_synthesizer

    from api.integrations.llamaindex import SieveLlamaRetriever, SieveNodeReranker

    retriever = SieveLlamaRetriever(live_server.url, top_k=6, rerank=False)
    retrieved = retriever.retrieve(QUERY)
    reranker = SieveNodeReranker(base_url=live_server.url, top_n=3)
    # An LLM that writes nothing: the sources are what is checked, and no model is needed.
    # Set globally too, for this test only: NoText falls back to Settings.llm, which
    # would otherwise look for OpenAI.
    monkeypatch.setattr(Settings, "_llm", MockLLM())
    synthesizer = get_response_synthesizer(llm=MockLLM(), response_mode="no_text")
    engine = RetrieverQueryEngine(
        retriever, response_synthesizer=synthesizer, node_postprocessors=[reranker]
    )
    nodes = engine.query(QUERY).source_nodes

    expected = _server_order(live_server.url, [n.node.get_content() for n in retrieved], 3)
    assert len(nodes) == 3
    for got, (index, score) in zip(nodes, expected, strict=True):
        source = retrieved[index]
        assert got.node.node_id == source.node.node_id
        assert got.node.metadata == source.node.metadata
        assert got.node.ref_doc_id == source.node.ref_doc_id
        assert got.score == pytest.approx(score)
    assert [n.score for n in retrieved] != [n.score for n in nodes]  # new scores, not the inputs'
    assert reranker.postprocess_nodes([], query_str=QUERY) == []


def test_llamaindex_reranker_raises_the_servers_error(live_server) -> None:
    pytest.importorskip("llama_index.core", reason="llama-index-core is not installed")
    from llama_index.core.schema import NodeWithScore, TextNode

    from api.integrations.llamaindex import SieveNodeReranker

    reranker = SieveNodeReranker(base_url=live_server.url)
    node = NodeWithScore(node=TextNode(text="x"), score=1.0)
    with pytest.raises(SieveAPIError, match=r"^422 invalid_request: query"):
        reranker.postprocess_nodes([node], query_str="")
    with pytest.raises(ValueError, match="needs the query"):
        reranker.postprocess_nodes([node])
    with pytest.raises(ValueError, match="top_n"):
        SieveNodeReranker(base_url=live_server.url, top_n=0)
