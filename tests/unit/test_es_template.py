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
from support.chunk_store_contract import chunks_of

from search.config import Settings
from search.errors import BackendUnavailable, ConfigError, InvalidRequest
from search.keyword import elasticsearch_index as es_module
from search.keyword.elasticsearch_index import (
    ElasticsearchKeywordIndex,
    index_template_body,
    template_name,
)
from search.store import Refusal, UpsertResult
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

    def delete(self, **kwargs: Any) -> ObjectApiResponse[Any]:
        self.calls.append(("delete", kwargs))
        return response({"acknowledged": True})


class FakeClient:
    """Records every call. ``searched`` is what a search (as of the last refresh)
    finds, document id -> version; ``held`` is what a realtime get finds, chunk
    id -> version (absent: not found)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.indices = FakeIndices(self.calls)
        self.search_responses: list[dict[str, Any]] = []
        self.searched: dict[str, int] = {}
        self.held: dict[str, int] = {}
        self.by_query_response: dict[str, Any] = {"deleted": 0, "failures": []}
        self.fail_with: Exception | None = None

    def search(self, **kwargs: Any) -> ObjectApiResponse[Any]:
        self.calls.append(("search", kwargs))
        if self.fail_with is not None:
            raise self.fail_with
        if "terms" in kwargs.get("aggregations", {}).get("docs", {}):  # stored versions
            wanted = kwargs["query"]["terms"]["doc_id"]
            buckets = [
                {"key": d, "version": {"value": float(self.searched[d])}}
                for d in wanted
                if d in self.searched
            ]
            return response({"aggregations": {"docs": {"buckets": buckets}}})
        return response(self.search_responses.pop(0))

    def mget(self, **kwargs: Any) -> ObjectApiResponse[Any]:
        self.calls.append(("mget", kwargs))
        found = {i: {"found": True, "_version": v} for i, v in self.held.items()}
        docs = [{"_id": i, **found.get(i, {"found": False})} for i in kwargs["ids"]]
        return response({"docs": docs})

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
    # The documents' other chunks (this version or older) go after the write,
    # which is made visible even on partial failure.
    assert names(client)[-2:] == ["delete_by_query", "refresh"]
    delete = client.calls[-2][1]
    assert delete["query"] == replaced_below(["a", "b"], 1, [c.id for c in chunks])
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


# -- the version rule: what Elasticsearch is asked, and how its answers are read --


def replaced_below(doc_ids: list[str], version: int, keep: list[str] | None = None) -> Any:
    """The delete query of chunks of ``doc_ids`` at ``version`` or older, but ``keep``."""
    older = [{"terms": {"doc_id": doc_ids}}, {"range": {"version": {"lte": version}}}]
    query: dict[str, Any] = {"bool": {"filter": older}}
    if keep:
        query["bool"]["must_not"] = [{"ids": {"values": sorted(keep)}}]
    return query


def deletes(client: FakeClient) -> list[dict[str, Any]]:
    return [kwargs["query"] for name, kwargs in client.calls if name == "delete_by_query"]


@pytest.fixture
def conflicts(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Chunk ids the fake bulk refuses with 409 (every other item succeeds)."""
    refused: set[str] = set()

    def bulk(client: Any, actions: Any, **_: Any) -> Iterator[tuple[bool, dict[str, Any]]]:
        for action in actions:
            if action["_id"] in refused:
                info = {"_id": action["_id"], "status": 409, "error": {"type": "version_conflict"}}
                yield False, {"index": info}

    monkeypatch.setattr(es_module, "streaming_bulk", bulk)
    return refused


def test_actions_carry_external_versions() -> None:
    from elasticsearch.helpers import expand_action

    (action,) = list(es_index("c")._actions(chunks_of("a", 1, version=7), [["tok"]]))
    meta, source = expand_action(action)
    assert meta == {
        "index": {
            "_index": "sieve-c",
            "_id": chunk_id("a", 0),
            "version": 7,
            "version_type": "external",
        }
    }
    assert source["version"] == 7 and "version_type" not in source


def test_a_stored_newer_version_refuses_the_write_before_any_bulk(
    fake: Any, conflicts: set[str]
) -> None:
    index, client = fake
    client.searched = {"a": 3}
    result = index.upsert(chunks_of("a", 2, version=2), [["x"], ["y"]])
    assert result == UpsertResult(written=(), refused=(Refusal("a", stored=3, offered=2),))
    (read,) = [kwargs for name, kwargs in client.calls if name == "search"]
    assert read["query"] == {"terms": {"doc_id": ["a"]}} and read["size"] == 0
    assert read["aggregations"]["docs"]["terms"] == {"field": "doc_id", "size": 1}
    assert read["aggregations"]["docs"]["aggs"] == {"version": {"max": {"field": "version"}}}
    # Nothing written, so nothing pruned and nothing to refresh.
    assert not {"delete_by_query", "refresh", "mget"} & set(names(client))


def test_replay_conflicts_are_harmless(fake: Any, conflicts: set[str]) -> None:
    index, client = fake
    chunks = chunks_of("a", 2, version=1)
    client.searched, client.held = {"a": 1}, {c.id: 1 for c in chunks}
    conflicts.update(c.id for c in chunks)  # every chunk refused: the same version is there
    assert index.upsert(chunks, [["x"], ["y"]]) == UpsertResult(written=("a",))
    assert deletes(client) == [replaced_below(["a"], 1, [c.id for c in chunks])]
    assert names(client)[-1] == "refresh"


def test_late_write_removes_its_own_strays(fake: Any, conflicts: set[str]) -> None:
    index, client = fake
    late = chunks_of("a", 3, version=1)
    # Version 2 (one chunk) landed after the version read, before the bulk.
    client.held = {late[0].id: 2}
    conflicts.add(late[0].id)
    result = index.upsert(late, [["x"]] * 3)
    assert result == UpsertResult(written=(), refused=(Refusal("a", stored=2, offered=1),))
    # Chunks 1 and 2 were written at version 1: made visible, then everything below 2 goes.
    assert deletes(client) == [replaced_below(["a"], 1)]
    assert names(client)[-3:] == ["refresh", "delete_by_query", "refresh"]


def test_tombstone_conflict_is_reported_not_ignored(fake: Any, conflicts: set[str]) -> None:
    index, client = fake
    chunks = chunks_of("a", 1, version=1)
    conflicts.add(chunks[0].id)  # refused, yet nothing is stored: a deleted copy
    with pytest.raises(BackendUnavailable, match="gc_deletes") as caught:
        index.upsert(chunks, [["x"]])
    assert caught.value.data["refused"] == [chunks[0].id]
    assert names(client)[-1] == "refresh"


def test_delete_documents_deletes_by_document_then_refreshes(fake: Any) -> None:
    index, client = fake
    index.delete_documents(["b", "a", "b"])
    assert deletes(client) == [{"bool": {"filter": [{"terms": {"doc_id": ["a", "b"]}}]}}]
    assert names(client)[-1] == "refresh"


def test_clear_deletes_the_index(fake: Any) -> None:
    index, client = fake
    index._ready = True
    index.clear()
    assert client.calls == [("delete", {"index": "sieve-docs", "ignore_unavailable": True})]
    assert index._ready is False  # created again (template and all) on next use
