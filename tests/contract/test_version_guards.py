"""Out-of-order writes never replace a newer version: the indexer's registry check
and each index's own guard (Qdrant Edge, qdrant-client local mode, a Qdrant
server when ``SIEVE_TEST_QDRANT_URL`` is set, Elasticsearch when
``SIEVE_TEST_ES_URL`` is set).

The indexer tests run on real tantivy and Qdrant Edge with a SQLite registry; a
small deterministic embedder stands in for the model (what is tested is which
version lands, not the vectors).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text
from support.servers import es_test_settings

from search.config import Settings
from search.errors import BackendUnavailable
from search.indexing import Indexer
from search.keyword.elasticsearch_index import ElasticsearchKeywordIndex
from search.keyword.tantivy_index import TantivyKeywordIndex
from search.registry import BACKENDS, Registry
from search.types import Chunk, Document, chunk_id
from search.vector.edge import QdrantEdgeIndex
from search.vector.qdrant_server import QdrantServerIndex

DIM = 16


def chunks_of(doc_id: str, n: int, version: int) -> list[Chunk]:
    return [
        Chunk(
            id=chunk_id(doc_id, i),
            doc_id=doc_id,
            ordinal=i,
            text=f"{doc_id} v{version} chunk {i}",
            start=0,
            end=10,
            title="",
            version=version,
        )
        for i in range(n)
    ]


def vectors(n: int, seed: int) -> list[list[float]]:
    return np.random.default_rng(seed).standard_normal((n, DIM)).tolist()


def payloads(index: Any) -> list[tuple[str, int, str]]:
    """(doc_id, version, text) of every point, through each engine's own scroll."""
    if isinstance(index, QdrantEdgeIndex):
        import qdrant_edge as qe

        records, _ = index._open().scroll(qe.ScrollRequest(limit=1_000, with_payload=True))
    else:
        with index._calls("scroll") as client:
            records, _ = client.scroll(index.collection, limit=1_000, with_payload=True)
    return sorted((r.payload["doc_id"], r.payload["version"], r.payload["text"]) for r in records)


@pytest.fixture(params=["qdrant-edge", "qdrant-local", "qdrant-server"])
def vector_index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    kind = request.param
    url = os.environ.get("SIEVE_TEST_QDRANT_URL", "")
    if kind == "qdrant-edge":
        index: Any = QdrantEdgeIndex(tmp_path / "edge", DIM)
    elif kind == "qdrant-local":
        settings = Settings(vector_backend="qdrant", qdrant_path=str(tmp_path / "local"))
        index = QdrantServerIndex(settings, DIM, f"guard-{uuid.uuid4().hex[:8]}")
    else:
        if not url:
            pytest.skip("SIEVE_TEST_QDRANT_URL is not set: no Qdrant server to test against")
        settings = Settings(
            vector_backend="qdrant",
            qdrant_url=url,
            qdrant_api_key=os.environ.get("SIEVE_TEST_QDRANT_API_KEY", ""),
        )
        index = QdrantServerIndex(settings, DIM, f"guard-{uuid.uuid4().hex[:8]}")
    yield index
    if kind == "qdrant-server":
        index.clear()
    index.close()


@pytest.mark.integration
def test_an_older_vector_write_after_a_newer_one_changes_nothing(vector_index: Any) -> None:
    vector_index.upsert(chunks_of("a", 2, version=2), vectors(2, seed=2))
    before = payloads(vector_index)

    # The late write of version 1 has more chunks: none of them may land, and
    # its pruning must not touch version 2's points.
    vector_index.upsert(chunks_of("a", 4, version=1), vectors(4, seed=1))

    assert payloads(vector_index) == before
    assert vector_index.count() == 2
    assert vector_index.doc_versions() == {"a": 2}


@pytest.mark.integration
def test_a_batch_writes_its_current_documents_and_skips_superseded_ones(
    vector_index: Any,
) -> None:
    vector_index.upsert(chunks_of("a", 1, version=3), vectors(1, seed=3))
    vector_index.upsert(
        chunks_of("a", 2, version=2) + chunks_of("b", 2, version=1), vectors(4, seed=4)
    )
    assert vector_index.doc_versions() == {"a": 3, "b": 1}
    assert vector_index.count() == 3
    # The same version again and a newer one still replace as before.
    vector_index.upsert(chunks_of("a", 1, version=3), vectors(1, seed=3))
    vector_index.upsert(chunks_of("b", 1, version=2), vectors(1, seed=5))
    assert vector_index.doc_versions() == {"a": 3, "b": 2}
    assert vector_index.count() == 2


# -- the indexer's registry check ---------------------------------------------


class HashEmbedder:
    """Deterministic stand-in for the model: a vector from each text's hash."""

    dim = DIM
    model_name = "hash"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            rows.append(np.random.default_rng(seed).standard_normal(DIM))
        return np.asarray(rows)


@pytest.fixture
def indexer(tmp_path: Path) -> Iterator[Indexer]:
    settings = Settings(data_dir=tmp_path)
    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    keyword = TantivyKeywordIndex(tmp_path / "tantivy")
    vector = QdrantEdgeIndex(tmp_path / "edge", DIM)
    built = Indexer(settings, registry, keyword, vector, HashEmbedder(), "c")
    yield built
    keyword.close()
    vector.close()
    registry.close()


def doc(doc_id: str, words: str) -> Document:
    return Document(id=doc_id, text=words)


@pytest.mark.unit
def test_a_superseded_version_is_skipped_not_written(indexer: Indexer) -> None:
    registry = indexer.registry
    (old,) = registry.stage("c", [doc("d1", "apple orchard")])
    (new,) = registry.stage("c", [doc("d1", "banana plantation")])
    assert (old.version, new.version) == (1, 2)

    # A job that read version 1 before version 2 was staged writes it late.
    report = indexer.rewrite([(old.document, old.version)], BACKENDS)
    assert (report.indexed, report.skipped, report.failed) == (0, 1, {})
    assert indexer.keyword.count() == indexer.vector.count() == 0
    assert registry.get("c", "d1").status == "pending"

    report = indexer.index_registered(["d1"])
    assert (report.indexed, report.skipped) == (1, 0)
    report = indexer.rewrite([(old.document, old.version)], BACKENDS)  # late again
    assert report.skipped == 1
    assert indexer.keyword.doc_versions() == indexer.vector.doc_versions() == {"d1": 2}
    assert indexer.keyword.search(["appl"], 5) == []
    assert [h.doc_id for h in indexer.keyword.search(["banana"], 5)] == ["d1"]


@pytest.mark.unit
def test_a_deleted_document_is_not_resurrected_by_a_late_write(indexer: Indexer) -> None:
    (staged,) = indexer.registry.stage("c", [doc("gone", "short lived text")])
    indexer.delete(["gone"])
    report = indexer.rewrite([(staged.document, staged.version)], BACKENDS)
    assert report.skipped == 1 and report.indexed == 0
    assert indexer.keyword.count() == indexer.vector.count() == 0


@pytest.mark.unit
def test_index_registered_is_idempotent_and_reports_missing_ids(indexer: Indexer) -> None:
    indexer.registry.stage("c", [doc(f"d{i}", f"text number {i} here") for i in range(5)])
    first = indexer.index_registered([f"d{i}" for i in range(5)] + ["nope", "d0"])
    assert (first.indexed, first.skipped, first.missing) == (5, 1, ["nope"])
    counts = (indexer.keyword.count(), indexer.vector.count())

    again = indexer.index_registered([f"d{i}" for i in range(5)])
    assert (again.indexed, again.skipped) == (0, 5)
    # As after a crash between the write and its acknowledgement: written again, same ids.
    with indexer.registry.engine.begin() as conn:
        conn.execute(text("UPDATE documents SET keyword_version = NULL, status = 'pending'"))
    rewritten = indexer.index_registered([f"d{i}" for i in range(5)])
    assert rewritten.indexed == 5
    assert (indexer.keyword.count(), indexer.vector.count()) == counts
    assert all(indexer.registry.get("c", f"d{i}").status == "indexed" for i in range(5))


@pytest.mark.unit
def test_an_unavailable_index_raises_for_a_retry_or_fails_the_documents(
    indexer: Indexer, tmp_path: Path
) -> None:
    indexer.registry.stage("c", [doc("a", "alpha text"), doc("b", "beta text")])
    holder = QdrantEdgeIndex(tmp_path / "edge", DIM)  # takes the shard's lock first
    holder.count()
    try:
        with pytest.raises(BackendUnavailable, match="open in another"):
            indexer.index_registered(["a", "b"], propagate=(BackendUnavailable,))
        assert indexer.registry.get("c", "a").status == "pending"  # nothing recorded yet

        report = indexer.index_registered(["a", "b"])  # the last attempt: record it
        assert sorted(report.failed) == ["a", "b"]
        row = indexer.registry.get("c", "a")
        assert row.status == "failed" and "open in another" in row.error
    finally:
        holder.close()
    assert indexer.index_registered(["a", "b"]).indexed == 2  # back: indexed after all


# -- Elasticsearch: external versions -----------------------------------------


@pytest.mark.unit
def test_elasticsearch_actions_carry_external_versions() -> None:
    from elasticsearch.helpers import expand_action

    settings = Settings(keyword_backend="elasticsearch", es_url="http://127.0.0.1:9")
    index = ElasticsearchKeywordIndex(settings, "c")
    (action,) = list(index._actions(chunks_of("a", 1, version=7), [["tok"]]))
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


class FakeEs:
    """Just enough of the client for ``upsert`` and ``clear``; ``held`` is what a
    realtime get finds: chunk id -> stored version (absent: not found)."""

    def __init__(self, held: dict[str, int]) -> None:
        self.held = held
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.indices = self

    def delete_by_query(self, **kwargs: Any) -> Any:
        self.calls.append(("delete_by_query", kwargs))
        return _Body({"deleted": 0, "failures": []})

    def mget(self, **kwargs: Any) -> Any:
        self.calls.append(("mget", kwargs))
        docs = [
            {
                "_id": i,
                "found": i in self.held,
                **({"_version": self.held[i]} if i in self.held else {}),
            }
            for i in kwargs["ids"]
        ]
        return {"docs": docs}

    def refresh(self, **kwargs: Any) -> None:
        self.calls.append(("refresh", kwargs))

    def delete(self, **kwargs: Any) -> None:
        self.calls.append(("delete", kwargs))


class _Body(dict):
    @property
    def body(self) -> dict[str, Any]:
        return self


@pytest.fixture
def fake_es(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An ElasticsearchKeywordIndex on ``FakeEs``; every bulk item of ``conflicts`` gets a 409."""
    import search.keyword.elasticsearch_index as es_module

    index = ElasticsearchKeywordIndex(
        Settings(keyword_backend="elasticsearch", es_url="http://127.0.0.1:9"), "c"
    )
    state: dict[str, Any] = {"conflicts": set()}

    def bulk(client: Any, actions: Any, **_: Any) -> Iterator[tuple[bool, dict[str, Any]]]:
        for action in actions:
            if action["_id"] in state["conflicts"]:
                info = {"_id": action["_id"], "status": 409, "error": {"type": "version_conflict"}}
                yield False, {"index": info}

    monkeypatch.setattr(es_module, "streaming_bulk", bulk)

    def setup(held: dict[str, int], conflicts: set[str]) -> FakeEs:
        client = FakeEs(held)
        index._client, index._ready = client, True
        state["conflicts"] = conflicts
        return client

    yield index, setup


def deletes(client: FakeEs) -> list[dict[str, Any]]:
    return [kwargs["query"] for name, kwargs in client.calls if name == "delete_by_query"]


def older_than(doc_ids: list[str], version: int) -> dict[str, Any]:
    terms = {"terms": {"doc_id": doc_ids}}
    return {"bool": {"filter": [terms, {"range": {"version": {"lt": version}}}]}}


@pytest.mark.unit
def test_elasticsearch_replay_conflicts_are_harmless(fake_es: Any) -> None:
    index, setup = fake_es
    chunks = chunks_of("a", 2, version=1)
    client = setup({c.id: 1 for c in chunks}, {c.id for c in chunks})
    index.upsert(chunks, [["x"], ["y"]])  # every chunk refused: the same version is there
    assert deletes(client) == [older_than(["a"], 1)]
    assert [name for name, _ in client.calls][-1] == "refresh"


@pytest.mark.unit
def test_elasticsearch_late_write_removes_its_own_strays(fake_es: Any) -> None:
    index, setup = fake_es
    late = chunks_of("a", 3, version=1)  # version 2 (one chunk) landed meanwhile
    client = setup({late[0].id: 2}, {late[0].id})
    index.upsert(late, [["x"]] * 3)
    # Chunks 1 and 2 were written at version 1: everything below 2 goes again.
    assert deletes(client) == [older_than(["a"], 1), older_than(["a"], 2)]


@pytest.mark.unit
def test_elasticsearch_tombstone_conflict_is_reported_not_ignored(fake_es: Any) -> None:
    index, setup = fake_es
    chunks = chunks_of("a", 1, version=1)
    client = setup({}, {chunks[0].id})  # refused, yet nothing is stored: a deleted copy
    with pytest.raises(BackendUnavailable, match="gc_deletes") as caught:
        index.upsert(chunks, [["x"]])
    assert caught.value.data["refused"] == [chunks[0].id]
    assert [name for name, _ in client.calls][-1] == "refresh"


@pytest.mark.unit
def test_elasticsearch_clear_deletes_the_index(fake_es: Any) -> None:
    index, setup = fake_es
    client = setup({}, set())
    index.clear()
    assert client.calls == [("delete", {"index": "sieve-c", "ignore_unavailable": True})]
    assert index._ready is False  # created again (template and all) on next use


ES_URL = os.environ.get("SIEVE_TEST_ES_URL", "")


@pytest.fixture
def es_index() -> Iterator[ElasticsearchKeywordIndex]:
    if not ES_URL:
        pytest.skip("SIEVE_TEST_ES_URL is not set: no Elasticsearch to test against")
    from elasticsearch import Elasticsearch

    from search.keyword.elasticsearch_index import template_name

    prefix = f"sieve-test-{uuid.uuid4().hex[:12]}"
    settings = es_test_settings(prefix)
    index = ElasticsearchKeywordIndex(settings, "guard")
    yield index
    index.close()
    auth: dict[str, Any] = {}
    if settings.es_api_key:
        auth["api_key"] = settings.es_api_key
    elif settings.es_username:
        auth["basic_auth"] = (settings.es_username, settings.es_password)
    with Elasticsearch(ES_URL, **auth) as admin:
        admin.indices.delete(index=index.index_name, ignore_unavailable=True)
        admin.options(ignore_status=404).indices.delete_index_template(name=template_name(prefix))


@pytest.mark.integration
def test_elasticsearch_keeps_the_newer_version(es_index: ElasticsearchKeywordIndex) -> None:
    es_index.upsert(chunks_of("a", 2, version=2), [["new"], ["new"]])
    es_index.upsert(chunks_of("a", 4, version=1), [["old"]] * 4)  # late: refused, no strays
    assert es_index.count() == 2
    assert es_index.doc_versions() == {"a": 2}
    assert es_index.search(["old"], 10) == []
    es_index.upsert(chunks_of("a", 2, version=2), [["new"], ["new"]])  # a replay: harmless
    es_index.upsert(chunks_of("a", 1, version=3), [["newest"]])  # newer: replaces, prunes
    assert es_index.count() == 1 and es_index.doc_versions() == {"a": 3}


@pytest.mark.integration
def test_elasticsearch_rebuild_after_clear_and_rewrite_after_delete(
    es_index: ElasticsearchKeywordIndex,
) -> None:
    es_index.upsert(chunks_of("a", 2, version=1) + chunks_of("b", 1, version=1), [["x"]] * 3)
    es_index.clear()  # drops the index, so the same versions can be written again
    es_index.upsert(chunks_of("a", 2, version=1), [["x"]] * 2)
    assert es_index.count() == 2
    es_index.delete_documents(["a"])
    # A deleted chunk's version is remembered for index.gc_deletes: refused, and said so.
    with pytest.raises(BackendUnavailable, match="gc_deletes"):
        es_index.upsert(chunks_of("a", 1, version=1), [["x"]])
