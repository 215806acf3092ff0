"""The Python client, the LangChain and LlamaIndex retrievers, and the Cohere SDK,
against a running Sieve app over real HTTP.

``live_server`` (tests/support/live_server.py) is the open app over a real engine
(tantivy, Qdrant Edge, MiniLM) with the sample corpus in ``default`` and the tiny
random cross-encoder behind the pair-score cache. ``keyed`` is a second app over
the same engine with API keys configured, on its own port: it proves that the
client and the Cohere SDK send their key, and gives the 401 and 403 answers.
The tiny cross-encoder's order is random, so relevance is asserted only on
unreranked searches. Tests that write use their own collection.
"""

from __future__ import annotations

import importlib
import json
import pickle
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from api.app import create_app
from api.client import SieveAPIError, SieveClient, SieveConnectionError
from api.settings import ApiSettings, ServiceSettings
from api.state import EXTENSION
from search.ingest import iter_jsonl
from search.types import Document

pytestmark = pytest.mark.integration

SAMPLE_CORPUS = Path(__file__).resolve().parents[2] / "sample" / "corpus.jsonl"
ADMIN_KEY = "admin-" + uuid.uuid4().hex
SEARCH_KEY = "search-" + uuid.uuid4().hex
QUERY = "how do I clean a cast iron skillet"


@pytest.fixture(scope="module")
def keyed(live_server) -> Iterator[str]:
    """The base URL of an app over ``live_server``'s engine that demands API keys."""
    engine = live_server.engine
    config = ServiceSettings(
        engine=engine.settings,
        api=ApiSettings(rate_limit="", api_keys=f"{ADMIN_KEY}:admin,{SEARCH_KEY}:search"),
    )
    app = create_app(config, engine)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, name="keyed-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_port}"
    finally:
        http.shutdown()
        thread.join(timeout=10)
        app.extensions[EXTENSION].jobs.close()


@pytest.fixture
def client(live_server) -> Iterator[SieveClient]:
    """A client of the open app (no key)."""
    with SieveClient(live_server.url, timeout=60) as sieve:
        yield sieve


@pytest.fixture
def admin(keyed: str) -> Iterator[SieveClient]:
    with SieveClient(keyed, api_key=ADMIN_KEY, timeout=60) as sieve:
        yield sieve


@pytest.fixture
def searcher(keyed: str) -> Iterator[SieveClient]:
    with SieveClient(keyed, api_key=SEARCH_KEY, timeout=60) as sieve:
        yield sieve


@pytest.fixture
def collection(admin: SieveClient) -> Iterator[str]:
    """A fresh collection, dropped afterwards."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    assert admin.create_collection(name) == {"name": name}
    yield name
    admin.drop_collection(name)


# -- the client ------------------------------------------------------------------


def test_search_returns_hits_with_provenance(client: SieveClient) -> None:
    plain = client.search(QUERY, top_k=3, rerank=False)
    assert plain["reranked"] is False and plain["top_k"] == 3
    assert plain["hits"][0]["doc_id"].startswith("en-cast-iron")

    answer = client.search(QUERY, top_k=3)  # the server's default: rerank, it has a reranker
    assert answer["reranked"] is True
    hits = answer["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    for hit in hits:
        assert {"doc_id", "title", "text", "chunk_id", "offsets", "score", "metadata"} <= set(hit)
        assert hit["rerank"] is not None and hit["score"] == hit["rerank"]["score"]


def test_search_options_reach_the_server(client: SieveClient) -> None:
    bm25 = client.search(QUERY, mode="bm25", top_k=2, rerank=False)
    assert bm25["mode"] == "bm25" and bm25["reranked"] is False
    assert all(h["vector"] is None for h in bm25["hits"])

    filtered = client.search(QUERY, top_k=5, filters={"topic": "home-kitchen"}, fusion="rrf")
    assert filtered["fusion"] == "rrf"
    assert filtered["hits"] and all(
        h["metadata"]["topic"] == "home-kitchen" for h in filtered["hits"]
    )

    first = client.search(QUERY, top_k=2, rerank=False)
    assert first["next_cursor"]
    second = client.search(QUERY, top_k=2, rerank=False, cursor=first["next_cursor"])
    third = client.search(QUERY, top_k=2, rerank=False, page=2)
    assert [h["rank"] for h in second["hits"]] == [3, 4]
    assert [h["chunk_id"] for h in second["hits"]] == [h["chunk_id"] for h in third["hits"]]


def test_context_packs_cited_text_within_budget(client: SieveClient) -> None:
    answer = client.context(QUERY, max_tokens=300, top_k=5)
    assert 0 < answer["used_tokens"] <= 300
    assert answer["format"] == "markdown"
    assert answer["documents"] and answer["documents"][0]["citation"] == 1
    assert "[1]" in answer["text"]


def test_rerank_scores_every_document(searcher: SieveClient) -> None:
    """Through the keyed app with a ``search`` key: rerank is a search-role endpoint."""
    documents = ["cast iron skillet care", {"text": "router password reset"}, "bee sting"]
    answer = searcher.rerank("skillet", documents, top_n=2, return_documents=True)
    results = answer["results"]
    assert len(results) == 2
    assert results[0]["relevance_score"] >= results[1]["relevance_score"]
    texts = ["cast iron skillet care", "router password reset", "bee sting"]
    for item in results:
        assert item["document"]["text"] == texts[item["index"]]
    assert answer["model"] and answer["id"]


def test_index_wait_get_stats_delete_round_trip(admin: SieveClient, collection: str) -> None:
    docs = [
        {"id": "kettle", "title": "Descaling", "text": "Boil vinegar and water to descale it."},
        {"id": "notes/a b?", "text": "An id with a slash, a space and a question mark.",
         "metadata": {"lang": "en", "tags": ["x"]}},
    ]  # fmt: skip
    task_id = admin.index_documents(docs, collection=collection)
    task = admin.wait_for_task(task_id, timeout=120)
    assert task["state"] == "done", task
    assert (task["indexed"], task["failed"]) == (2, {})
    assert admin.task(task_id)["id"] == task_id

    stored = admin.get_document("notes/a b?", collection=collection)
    assert stored["id"] == "notes/a b?" and stored["metadata"] == {"lang": "en", "tags": ["x"]}
    assert stored["status"] == "indexed" and stored["chunks"] >= 1

    stats = admin.stats(collection)
    assert (stats["documents"], stats["keyword_chunks"]) == (2, stats["vector_chunks"])
    listed = {c["name"]: c for c in admin.collections()}
    assert listed[collection]["documents"] == 2

    hits = admin.search("descale vinegar", collection=collection, top_k=1)["hits"]
    assert hits[0]["doc_id"] == "kettle"

    task = admin.wait_for_task(
        admin.put_document("kettle", "Citric acid descales too.", collection=collection)
    )
    assert task["state"] == "done" and admin.get_document("kettle", collection)["version"] == 2

    deleted = admin.delete_documents(["kettle", "nope"], collection=collection)
    assert deleted == {"deleted": ["kettle"], "not_found": ["nope"]}
    with pytest.raises(SieveAPIError) as err:
        admin.get_document("kettle", collection=collection)
    assert (err.value.status, err.value.code) == (404, "not_found")
    assert admin.stats(collection)["documents"] == 1


def test_upload_files(admin: SieveClient, collection: str, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("Water the basil when the top of the soil is dry.", encoding="utf-8")
    lines = tmp_path / "more.jsonl"
    lines.write_text(
        json.dumps({"_id": "up-1", "text": "Prune tomatoes weekly."}) + "\n{not json\n",
        encoding="utf-8",
    )
    task = admin.wait_for_task(admin.upload([note, lines], collection=collection), timeout=120)
    assert task["state"] == "done", task
    assert task["indexed"] == 2
    assert task["errors"] and "more.jsonl:2" in task["errors"][0]
    assert admin.get_document("up-1", collection=collection)["text"] == "Prune tomatoes weekly."


def test_errors_carry_status_code_and_details(searcher: SieveClient, keyed: str) -> None:
    with pytest.raises(SieveAPIError) as err:
        searcher.search(QUERY, top_k=1000)
    assert (err.value.status, err.value.code) == (422, "invalid_request")
    assert err.value.details["errors"][0]["loc"] == ["top_k"]
    assert "top_k" in err.value.message

    with pytest.raises(SieveAPIError) as err:
        searcher.search(QUERY, collection="no-such-collection")
    assert (err.value.status, err.value.code) == (404, "not_found")
    assert err.value.details == {"collection": "no-such-collection"}

    with pytest.raises(SieveAPIError) as err:
        searcher.create_collection("needs-admin")  # a search key
    assert (err.value.status, err.value.code) == (403, "forbidden")

    with SieveClient(keyed, api_key="wrong") as stranger:
        with pytest.raises(SieveAPIError) as err:
            stranger.search(QUERY)
    assert (err.value.status, err.value.code) == (401, "unauthorized")

    copy = pickle.loads(pickle.dumps(err.value))
    assert (copy.status, copy.code, copy.message) == (401, "unauthorized", err.value.message)


def test_no_server_is_a_connection_error() -> None:
    with SieveClient("http://127.0.0.1:9", timeout=2) as client:  # the discard port
        with pytest.raises(SieveConnectionError) as err:
            client.stats()
    assert err.value.status == 0 and err.value.code in ("unreachable", "timeout")
    assert isinstance(err.value, SieveAPIError)


def test_constructor_checks_its_arguments_and_connects_lazily() -> None:
    with pytest.raises(ValueError, match="http"):
        SieveClient("127.0.0.1:8000")
    with pytest.raises(ValueError, match="timeout"):
        SieveClient("http://127.0.0.1:8000", timeout=0)
    client = SieveClient("http://127.0.0.1:8000/", api_key="secret")
    assert client._http is None and "secret" not in repr(client)
    client.close()


# -- LangChain ---------------------------------------------------------------------


def test_langchain_retriever_returns_documents(keyed: str) -> None:
    pytest.importorskip("langchain_core", reason="langchain-core is not installed")
    from langchain_core.documents import Document as LcDocument

    from api.integrations.langchain import SieveRetriever

    retriever = SieveRetriever(
        base_url=keyed,
        api_key=SEARCH_KEY,
        top_k=3,
        filters={"topic": "home-kitchen"},
        rerank=False,
    )
    assert SEARCH_KEY not in repr(retriever)
    docs = retriever.invoke(QUERY)
    assert len(docs) == 3
    assert all(isinstance(d, LcDocument) for d in docs)
    first = docs[0]
    assert first.page_content and first.metadata["doc_id"].startswith("en-cast-iron")
    assert [d.metadata["rank"] for d in docs] == [1, 2, 3]
    for doc in docs:
        meta = doc.metadata
        assert {"doc_id", "title", "score", "rank", "chunk_id", "offsets"} <= set(meta)
        assert meta["topic"] == "home-kitchen" and meta["lang"] == "en"


def _hide(monkeypatch: pytest.MonkeyPatch, package: str, module: str) -> None:
    """Make ``package`` unimportable and ``module`` not yet imported, for this test."""
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, package, None)
    if module in sys.modules:
        monkeypatch.delitem(sys.modules, module)


def test_langchain_missing_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "langchain_core", "api.integrations.langchain")
    with pytest.raises(ImportError, match=r"pip install sieve-search\[langchain\]"):
        importlib.import_module("api.integrations.langchain")


# -- LlamaIndex --------------------------------------------------------------------


def test_llamaindex_retriever_returns_scored_nodes(live_server) -> None:
    pytest.importorskip("llama_index.core", reason="llama-index-core is not installed")
    from llama_index.core.schema import MetadataMode, NodeWithScore

    from api.integrations.llamaindex import SieveLlamaRetriever

    retriever = SieveLlamaRetriever(live_server.url, top_k=3, rerank=False)
    nodes = retriever.retrieve(QUERY)
    assert len(nodes) == 3
    assert all(isinstance(n, NodeWithScore) for n in nodes)
    scores = [n.score for n in nodes]
    assert scores == sorted(scores, reverse=True)
    first = nodes[0]
    assert first.node.node_id == first.node.metadata["chunk_id"]
    assert first.node.ref_doc_id == first.node.metadata["doc_id"]
    assert first.node.metadata["doc_id"].startswith("en-cast-iron")
    assert first.node.get_content()  # the passage text
    shown = first.node.get_content(metadata_mode=MetadataMode.LLM)
    assert "chunk_id" not in shown and "doc_id" in shown


def test_llamaindex_missing_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "llama_index", "api.integrations.llamaindex")
    with pytest.raises(ImportError, match=r"pip install sieve-search\[llamaindex\]"):
        importlib.import_module("api.integrations.llamaindex")


# -- the rerank endpoint through Cohere's own SDK -----------------------------------


def _passages(n: int) -> list[str]:
    docs = [d.text for d in iter_jsonl(SAMPLE_CORPUS) if isinstance(d, Document)]
    assert len(docs) >= n
    return docs[:n]


def test_cohere_v2_sdk_reranks_through_sieve(keyed: str) -> None:
    """``cohere.ClientV2.rerank`` (POST /v2/rerank) parses Sieve's answer."""
    cohere = pytest.importorskip("cohere", reason="the cohere SDK is not installed")
    documents = _passages(40)  # more than a 32-pair batch: nothing may cap the list
    with cohere.ClientV2(api_key=SEARCH_KEY, base_url=keyed, timeout=60) as co:
        top = co.rerank(model="sieve", query=QUERY, documents=documents, top_n=5)
        every = co.rerank(model="sieve", query=QUERY, documents=documents)
    assert len(top.results) == 5
    scores = [r.relevance_score for r in top.results]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert all(0 <= r.index < 40 for r in top.results)
    assert top.id and top.meta is not None and top.meta.billed_units.search_units == 1
    # All 40 were scored, each once, and top_n is the head of the full order.
    assert sorted(r.index for r in every.results) == list(range(40))
    assert [r.index for r in every.results[:5]] == [r.index for r in top.results]


def test_cohere_v1_sdk_reranks_through_sieve(keyed: str) -> None:
    """``cohere.Client.rerank`` (POST /v1/rerank), documents returned."""
    cohere = pytest.importorskip("cohere", reason="the cohere SDK is not installed")
    documents = _passages(40)
    with cohere.Client(api_key=SEARCH_KEY, base_url=keyed, timeout=60) as co:
        answer = co.rerank(
            model="sieve", query=QUERY, documents=documents, top_n=5, return_documents=True
        )
    assert len(answer.results) == 5
    scores = [r.relevance_score for r in answer.results]
    assert scores == sorted(scores, reverse=True)
    for result in answer.results:
        assert result.document is not None and result.document.text == documents[result.index]


def test_cohere_v1_sdk_ranks_object_documents_by_their_rank_fields(keyed: str) -> None:
    """Object documents with extra fields and ``rank_fields`` through ``cohere.Client``."""
    cohere = pytest.importorskip("cohere", reason="the cohere SDK is not installed")
    documents = [
        {"title": "Nosebleeds", "text": "Pinch the soft part of the nose.", "url": "/a"},
        {"title": "Gardens", "text": "Water the roses in the morning.", "url": "/b"},
    ]
    with cohere.Client(api_key=SEARCH_KEY, base_url=keyed, timeout=60) as co:
        answer = co.rerank(
            model="sieve",
            query=QUERY,
            documents=documents,
            rank_fields=["title", "text"],
            return_documents=True,
        )
    assert sorted(r.index for r in answer.results) == [0, 1]
    for result in answer.results:
        assert (
            result.document is not None and result.document.text == documents[result.index]["text"]
        )


def test_cohere_v2_sdk_max_tokens_per_doc_and_relevant_spans(keyed: str) -> None:
    """``max_tokens_per_doc`` changes the scores of long documents; spans are a clear 422."""
    cohere = pytest.importorskip("cohere", reason="the cohere SDK is not installed")
    long_doc = "Pinch the nose. " + "Gardens need water and sun every single day. " * 40
    with cohere.ClientV2(api_key=SEARCH_KEY, base_url=keyed, timeout=60) as co:
        whole = co.rerank(model="sieve", query=QUERY, documents=[long_doc])
        cut = co.rerank(model="sieve", query=QUERY, documents=[long_doc], max_tokens_per_doc=8)
        assert whole.results[0].relevance_score != cut.results[0].relevance_score
        with pytest.raises(cohere.core.ApiError) as refused:
            co.rerank(
                model="sieve", query=QUERY, documents=["a"], relevant_spans={"mode": "enabled"}
            )
    assert refused.value.status_code == 422
    assert "relevant_spans: not supported" in str(refused.value.body)
