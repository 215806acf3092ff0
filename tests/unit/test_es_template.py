"""The Elasticsearch template, and the requests the Elasticsearch index sends.

No server is needed: the client is replaced by a recording fake, so CI checks
what Sieve asks of Elasticsearch and how it reads the answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig, ObjectApiResponse
from elasticsearch import ApiError, BadRequestError
from elasticsearch import ConnectionError as ESConnectionError

from search.config import Settings
from search.errors import BackendUnavailable, ConfigError, InvalidRequest
from search.keyword import elasticsearch_index as es_module
from search.keyword.elasticsearch_index import (
    ElasticsearchKeywordIndex,
    index_template_body,
    template_name,
)
from search.types import Chunk, chunk_id

pytestmark = pytest.mark.unit

INFRA_TEMPLATE = Path(__file__).resolve().parents[2] / "infra/elasticsearch/index-template.json"
REGENERATE = (
    'python -c "import json; from search.keyword.elasticsearch_index import *;'
    ' print(json.dumps(index_template_body(), indent=2))"'
    " > infra/elasticsearch/index-template.json"
)


def test_infra_template_is_the_generated_one() -> None:
    on_disk = json.loads(INFRA_TEMPLATE.read_text())
    assert on_disk == index_template_body(), f"regenerate it: {REGENERATE}"


def test_template_structure() -> None:
    body = index_template_body()
    assert body["index_patterns"] == ["sieve-*"]
    settings = body["template"]["settings"]["index"]
    assert settings["number_of_shards"] == 1
    assert settings["similarity"]["default"] == {"type": "BM25", "k1": 1.2, "b": 0.75}
    analyzer = settings["analysis"]["analyzer"]["sieve_tokens"]
    assert analyzer == {"type": "custom", "tokenizer": "whitespace", "filter": []}
    mappings = body["template"]["mappings"]
    assert mappings["dynamic"] == "strict"
    props = mappings["properties"]
    assert props["tokens"] == {
        "type": "text",
        "analyzer": "sieve_tokens",
        "norms": True,
        "index_options": "freqs",
    }
    assert props["chunk_id"]["type"] == props["doc_id"]["type"] == props["facets"]["type"]
    assert props["facets"]["type"] == "keyword"
    assert props["text"] == props["title"] == {"type": "text", "index": False}
    assert all(props[f]["type"] == "integer" for f in ("start", "end", "ordinal", "version"))
    assert props["metadata"] == {"type": "object", "enabled": False}
    assert index_template_body(shards=3)["template"]["settings"]["index"]["number_of_shards"] == 3


def test_narrower_prefix_has_higher_priority() -> None:
    assert index_template_body("sieve-prod")["priority"] > index_template_body("sieve")["priority"]
    assert index_template_body("sieve-prod")["index_patterns"] == ["sieve-prod-*"]
    assert template_name("sieve") == "sieve-chunks"


def es_index(collection: str = "default", **overrides: Any) -> ElasticsearchKeywordIndex:
    settings = Settings(keyword_backend="elasticsearch", es_url="http://es.invalid:9200")
    return ElasticsearchKeywordIndex(settings.with_overrides(**overrides), collection)


def sample_chunk(doc_id: str, ordinal: int = 0) -> Chunk:
    meta = {"lang": "en"}
    return Chunk(
        id=chunk_id(doc_id, ordinal),
        doc_id=doc_id,
        ordinal=ordinal,
        text="t",
        start=0,
        end=1,
        facets=("lang=en",),
        metadata=meta,
    )


def test_strict_mapping_covers_every_written_field() -> None:
    action = next(es_index()._actions([sample_chunk("a")], [["appl"]]))
    props = index_template_body()["template"]["mappings"]["properties"]
    assert set(action["_source"]) == set(props)
    assert action["_id"] == chunk_id("a", 0)


def test_index_names() -> None:
    assert es_index("Docs").index_name == "sieve-docs"
    assert es_index("docs", es_index_prefix="Team").index_name == "team-docs"
    for bad in ("", "a b", "a/b", "a*", "x,y", "#x"):
        with pytest.raises(InvalidRequest):
            es_index(bad)
    with pytest.raises(ConfigError):
        es_index("docs", es_index_prefix="_bad")


# -- requests, against a fake client ------------------------------------------


def response(body: dict[str, Any], status: int = 200) -> ObjectApiResponse[Any]:
    return ObjectApiResponse(body=body, meta=meta(status))


def meta(status: int) -> ApiResponseMeta:
    return ApiResponseMeta(
        status=status,
        http_version="1.1",
        headers=HttpHeaders(),
        duration=0.0,
        node=NodeConfig("http", "es.invalid", 9200),
    )


class FakeIndices:
    def __init__(self, calls: list[tuple[str, dict[str, Any]]]) -> None:
        self.calls = calls

    def put_index_template(self, **kwargs: Any) -> ObjectApiResponse[Any]:
        self.calls.append(("put_index_template", kwargs))
        return response({"acknowledged": True})

    def create(self, **kwargs: Any) -> ObjectApiResponse[Any]:
        self.calls.append(("create", kwargs))
        # As if another process had created it first.
        raise BadRequestError("resource_already_exists_exception", meta(400), {})

    def refresh(self, **kwargs: Any) -> ObjectApiResponse[Any]:
        self.calls.append(("refresh", kwargs))
        return response({})


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.indices = FakeIndices(self.calls)
        self.search_responses: list[dict[str, Any]] = []
        self.by_query_response: dict[str, Any] = {"deleted": 0, "failures": []}
        self.fail_with: Exception | None = None

    def search(self, **kwargs: Any) -> ObjectApiResponse[Any]:
        self.calls.append(("search", kwargs))
        if self.fail_with is not None:
            raise self.fail_with
        return response(self.search_responses.pop(0))

    def delete_by_query(self, **kwargs: Any) -> ObjectApiResponse[Any]:
        self.calls.append(("delete_by_query", kwargs))
        return response(self.by_query_response)

    def count(self, **kwargs: Any) -> ObjectApiResponse[Any]:
        self.calls.append(("count", kwargs))
        return response({"count": 7})

    def close(self) -> None:
        self.calls.append(("close", {}))


@pytest.fixture
def fake() -> Iterator[tuple[ElasticsearchKeywordIndex, FakeClient]]:
    index = es_index("docs")
    client = FakeClient()
    index._client = client  # type: ignore[assignment]
    yield index, client


def names(client: FakeClient) -> list[str]:
    return [name for name, _ in client.calls]


def test_first_use_puts_template_and_tolerates_existing_index(fake: Any) -> None:
    index, client = fake
    assert index.count() == 7
    assert names(client) == ["put_index_template", "create", "count"]
    put = client.calls[0][1]
    body = index_template_body("sieve")
    assert put["name"] == "sieve-chunks"
    assert put["template"] == body["template"] and put["meta"] == body["_meta"]
    assert put["index_patterns"] == ["sieve-*"]
    index.count()
    assert names(client).count("put_index_template") == 1


def test_search_request_and_hits(fake: Any) -> None:
    index, client = fake
    source = {"chunk_id": "c1", "doc_id": "d1", "text": "hello", "title": "T", "start": 3}
    source |= {"end": 8, "ordinal": 2, "metadata": {"k": [1]}}
    hit_body = {"_id": "c1", "_score": 1.5, "_source": source}
    client.search_responses.append({"hits": {"hits": [hit_body]}})
    hits = index.search(["appl", "pie"], 5, {"lang": "en", "topic": ["a", "b"]})
    _, kwargs = client.calls[-1]
    assert kwargs["index"] == "sieve-docs" and kwargs["size"] == 5
    assert kwargs["track_total_hits"] is False
    assert kwargs["query"] == {
        "bool": {
            "must": {"match": {"tokens": {"query": "appl pie", "operator": "or"}}},
            "filter": [
                {"terms": {"facets": ["lang=en"]}},
                {"terms": {"facets": ["topic=a", "topic=b"]}},
            ],
        }
    }
    [hit] = hits
    assert (hit.chunk_id, hit.doc_id, hit.score) == ("c1", "d1", 1.5)
    assert (hit.text, hit.title) == ("hello", "T")
    assert (hit.start, hit.end, hit.ordinal, dict(hit.metadata)) == (3, 8, 2, {"k": [1]})


def test_no_op_calls_never_connect() -> None:
    index = es_index()
    assert index.search([], 10) == []
    index.delete_documents([])
    index.upsert([], [])
    assert index._client is None


def test_upsert_reads_every_bulk_item(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    index, client = fake
    seen: dict[str, Any] = {}

    def fake_bulk(es: Any, actions: Any, **kwargs: Any) -> Iterator[tuple[bool, dict[str, Any]]]:
        seen.update(kwargs, actions=list(actions))
        error = {"type": "mapper_parsing_exception", "reason": "bad\nfield"}
        yield False, {"index": {"_id": "c-bad", "status": 400, "error": error}}
        yield False, {"index": {"_id": "c-busy", "status": 429, "error": "rejected"}}

    monkeypatch.setattr(es_module, "streaming_bulk", fake_bulk)
    chunks = [sample_chunk("a", 0), sample_chunk("a", 1), sample_chunk("b")]
    with pytest.raises(BackendUnavailable) as caught:
        index.upsert(chunks, [["x"], ["y"], ["z"]])
    assert caught.value.backend == "elasticsearch"
    failed = caught.value.data["failed"]
    assert failed[0].startswith("c-bad: 400 mapper_parsing_exception: bad field")
    assert failed[1] == "c-busy: 429 rejected"
    assert "\n" not in str(caught.value)
    # Older versions' chunks go after the write, which is made visible even on
    # partial failure.
    assert names(client)[-2:] == ["delete_by_query", "refresh"]
    delete = client.calls[-2][1]
    older = [{"terms": {"doc_id": ["a", "b"]}}, {"range": {"version": {"lt": 1}}}]
    assert delete["query"] == {"bool": {"filter": older}}
    assert delete["conflicts"] == "proceed"
    assert seen["raise_on_error"] is False and seen["raise_on_exception"] is False
    assert seen["max_retries"] == 5
    assert [a["_id"] for a in seen["actions"]] == [c.id for c in chunks]


def test_by_query_failures_are_not_swallowed(fake: Any) -> None:
    index, client = fake
    client.by_query_response = {"failures": [{"cause": {"type": "x", "reason": "shard down"}}]}
    with pytest.raises(BackendUnavailable, match="1 failures"):
        index.delete_documents(["a"])


@pytest.mark.parametrize(
    "error",
    [
        ESConnectionError("Connection refused"),
        ApiError("search_phase_execution_exception", meta(503), {}),
    ],
)
def test_transport_errors_become_backend_unavailable(fake: Any, error: Exception) -> None:
    index, client = fake
    client.fail_with = error
    with pytest.raises(BackendUnavailable) as caught:
        index.search(["appl"], 10)
    assert caught.value.backend == "elasticsearch"
    assert "\n" not in str(caught.value)


def test_doc_versions_pages_through_the_composite_aggregation(fake: Any) -> None:
    index, client = fake
    page1 = {
        "buckets": [{"key": {"doc_id": "a"}, "version": {"value": 3.0}}],
        "after_key": {"doc_id": "a"},
    }
    page2 = {
        "buckets": [{"key": {"doc_id": "b"}, "version": {"value": 1.0}}],
        "after_key": {"doc_id": "b"},
    }
    page3: dict[str, Any] = {"buckets": []}
    for page in (page1, page2, page3):
        client.search_responses.append({"aggregations": {"docs": page}})
    assert index.doc_versions() == {"a": 3, "b": 1}
    searches = [kwargs for name, kwargs in client.calls if name == "search"]
    assert "after" not in searches[0]["aggregations"]["docs"]["composite"]
    assert searches[1]["aggregations"]["docs"]["composite"]["after"] == {"doc_id": "a"}
    assert len(searches) == 3
