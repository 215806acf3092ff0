"""One contract for every VectorIndex: Qdrant Edge, qdrant-client local mode, a Qdrant server.

The server runs only when ``SIEVE_TEST_QDRANT_URL`` is set (optionally
``SIEVE_TEST_QDRANT_API_KEY``); each test gets its own collection, dropped after.
Vectors are small hand-made or seeded-random ones: no model is loaded.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.chunk_store_contract import ChunkStoreContract, VectorLeg

from search.config import Settings
from search.errors import BackendUnavailable, ConfigError
from search.types import Chunk, chunk_id, facet_terms
from search.vector import VectorIndex, open_vector_index
from search.vector.edge import QdrantEdgeIndex
from search.vector.qdrant_server import QdrantServerIndex

pytestmark = pytest.mark.integration

DIM = 16
Opener = Callable[..., Any]  # (dim=DIM, exact_search_threshold=...) -> a fresh index object


def unit(values: Any) -> list[float]:
    array = np.asarray(values, dtype=np.float64)
    return (array / np.linalg.norm(array)).tolist()


def basis(i: int, dim: int = DIM, noise: float = 0.0, seed: int = 0) -> list[float]:
    """Unit vector along axis ``i``, optionally nudged off it by seeded noise."""
    vector = np.zeros(dim)
    vector[i] = 1.0
    if noise:
        vector += noise * np.random.default_rng(seed).standard_normal(dim)
    return unit(vector)


def chunks_of(
    doc_id: str,
    n: int,
    *,
    metadata: Mapping[str, Any] | None = None,
    version: int = 1,
    title: str = "",
) -> list[Chunk]:
    meta = dict(metadata or {})
    return [
        Chunk(
            id=chunk_id(doc_id, i),
            doc_id=doc_id,
            ordinal=i,
            text=f"{doc_id} chunk {i}",
            start=100 * i,
            end=100 * i + 42,
            title=title or f"Title of {doc_id}",
            version=version,
            facets=tuple(facet_terms(meta)),
            metadata=meta,
        )
        for i in range(n)
    ]


@pytest.fixture(params=["qdrant-edge", "qdrant-local", "qdrant-server"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens index objects on one storage location (so reopening sees the same data)."""
    kind = request.param
    url = os.environ.get("SIEVE_TEST_QDRANT_URL", "")
    if kind == "qdrant-server" and not url:
        pytest.skip("SIEVE_TEST_QDRANT_URL is not set: no Qdrant server to test against")
    collection = f"test-{uuid.uuid4().hex[:12]}"
    opened: list[Any] = []

    def open_index(dim: int = DIM, exact_search_threshold: int = 20_000) -> Any:
        index: Any
        if kind == "qdrant-edge":
            index = QdrantEdgeIndex(
                tmp_path / "edge", dim, exact_search_threshold=exact_search_threshold
            )
        else:
            location: dict[str, Any] = (
                {"qdrant_path": str(tmp_path / "local")}
                if kind == "qdrant-local"
                else {
                    "qdrant_url": url,
                    "qdrant_api_key": os.environ.get("SIEVE_TEST_QDRANT_API_KEY", ""),
                }
            )
            settings = Settings(
                vector_backend="qdrant", exact_search_threshold=exact_search_threshold, **location
            )
            index = QdrantServerIndex(settings, dim, collection)
        opened.append(index)
        return index

    yield open_index
    for index in opened:
        index.close()
    if kind == "qdrant-server":
        leftover = open_index()
        leftover.clear()
        leftover.close()


@pytest.fixture
def index(opener: Opener) -> VectorIndex:
    built: VectorIndex = opener()
    return built


@pytest.fixture
def leg(index: VectorIndex) -> VectorLeg:
    return VectorLeg(index)


class TestVersionedChunkStore(ChunkStoreContract):
    """The chunk-store contract (``support.chunk_store_contract``) on this leg."""


def test_implements_the_protocol(index: VectorIndex) -> None:
    assert isinstance(index, VectorIndex)
    assert index.dim == DIM
    assert index.count() == 0
    assert index.search(basis(0), 5) == []


def test_nearest_neighbour_score_and_order(index: VectorIndex) -> None:
    chunks = chunks_of("a", 1) + chunks_of("b", 1) + chunks_of("c", 1) + chunks_of("d", 1)
    vectors = [basis(0), basis(1), unit([1, 1] + [0] * (DIM - 2)), unit([1, 0.2] + [0] * (DIM - 2))]
    index.upsert(chunks, vectors)

    hits = index.search(basis(1), 4)
    assert hits[0].doc_id == "b"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    # Cosine similarities of basis(1) with a, b, c, d: 0, 1, 0.707, 0.196.
    assert [h.doc_id for h in hits] == ["b", "c", "d", "a"]
    assert [h.score for h in hits] == pytest.approx([1.0, 2**-0.5, 0.2 / 1.04**0.5, 0.0], abs=1e-4)
    # Scale does not matter for cosine.
    assert index.search([5 * x for x in basis(0)], 1)[0].doc_id == "a"
    assert len(index.search(basis(0), 2)) == 2


def test_upsert_replaces_every_old_point_of_a_document(index: VectorIndex) -> None:
    index.upsert(chunks_of("doc", 3), [basis(0), basis(1), basis(2)])
    index.upsert(chunks_of("other", 2), [basis(3), basis(4)])
    assert index.count() == 5

    index.upsert(chunks_of("doc", 1, version=2), [basis(5)])
    assert index.count() == 3
    hits = index.search(basis(1), 10)
    assert sorted((h.doc_id, h.ordinal) for h in hits) == [("doc", 0), ("other", 0), ("other", 1)]
    assert index.doc_versions() == {"doc": 2, "other": 1}
    assert index.search(basis(5), 1)[0].chunk_id == chunk_id("doc", 0)


def test_replaying_a_write_is_idempotent(index: VectorIndex) -> None:
    chunks = chunks_of("a", 2) + chunks_of("b", 3)
    vectors = [basis(i) for i in range(5)]
    index.upsert(chunks, vectors)
    first = index.search(basis(2), 5)
    index.upsert(chunks, vectors)
    assert index.count() == 5
    assert index.search(basis(2), 5) == first
    assert index.doc_versions() == {"a": 1, "b": 1}


def test_delete_documents_removes_only_that_document(index: VectorIndex) -> None:
    index.upsert(chunks_of("a", 3) + chunks_of("b", 2), [basis(i) for i in range(5)])
    index.delete_documents(["a"])
    assert index.count() == 2
    assert {h.doc_id for h in index.search(basis(0), 10)} == {"b"}
    assert index.doc_versions() == {"b": 1}

    index.delete_documents(["nope", "never-indexed"])
    index.delete_documents([])
    index.upsert([], [])
    assert index.count() == 2


def test_filters_are_applied_inside_the_search(index: VectorIndex) -> None:
    docs: dict[str, dict[str, Any]] = {
        "en-a": {"lang": "en", "topic": "a"},
        "en-b": {"lang": "en", "topic": "b"},
        "de-a": {"lang": "de", "topic": "a"},
        "fr-c": {"lang": "fr", "topic": ["c", "a"]},
    }
    chunks: list[Chunk] = []
    for name, meta in docs.items():
        chunks += chunks_of(name, 1, metadata=meta)
    # The query is basis(0); "de-a" is the farthest point from it.
    vectors = [
        basis(0, noise=0.1, seed=1),
        basis(0, noise=0.2, seed=2),
        basis(7),
        basis(0, noise=0.3, seed=3),
    ]
    index.upsert(chunks, vectors)
    query = basis(0)

    def docs_for(filters: Mapping[str, Any], top_k: int = 10) -> set[str]:
        return {h.doc_id for h in index.search(query, top_k, filters)}

    assert docs_for({"lang": "en"}) == {"en-a", "en-b"}
    assert docs_for({"lang": ["de", "fr"]}) == {"de-a", "fr-c"}
    assert docs_for({"lang": "en", "topic": "a"}) == {"en-a"}
    assert docs_for({"topic": "a"}) == {"en-a", "de-a", "fr-c"}  # a list value matches any item
    assert docs_for({"lang": "de", "topic": "b"}) == set()
    assert docs_for({"lang": "xx"}) == set()
    assert docs_for({}) == set(docs)
    # Filtering after a top-1 search would find nothing: the filter must run inside it.
    (hit,) = index.search(query, 1, {"lang": "de"})
    assert hit.doc_id == "de-a"
    assert hit.score == pytest.approx(0.0, abs=1e-5)


def test_filters_on_booleans_and_integers(index: VectorIndex) -> None:
    index.upsert(
        chunks_of("x", 1, metadata={"public": True, "year": 2024})
        + chunks_of("y", 1, metadata={"public": False, "year": 2023}),
        [basis(0), basis(1)],
    )
    assert [h.doc_id for h in index.search(basis(0), 5, {"public": False})] == ["y"]
    assert [h.doc_id for h in index.search(basis(1), 5, {"year": 2024})] == ["x"]


def test_payload_round_trip(index: VectorIndex) -> None:
    metadata = {"lang": "en", "tags": ["x", "y"], "nested": {"a": [1, 2], "b": None}, "n": 3}
    (chunk,) = [
        c for c in chunks_of("doc-1", 2, metadata=metadata, title="Ünïcode 标题") if c.ordinal == 1
    ]
    index.upsert([chunk], [basis(3)])
    (hit,) = index.search(basis(3), 1)
    assert hit.chunk_id == chunk.id
    assert hit.doc_id == "doc-1"
    assert hit.text == "doc-1 chunk 1"
    assert hit.title == "Ünïcode 标题"
    assert (hit.start, hit.end, hit.ordinal) == (100, 142, 1)
    assert dict(hit.metadata) == metadata


def test_count_and_doc_versions(index: VectorIndex) -> None:
    assert index.doc_versions() == {}
    many = [c for i in range(30) for c in chunks_of(f"d{i}", 2, version=i % 3 + 1)]
    index.upsert(many, [basis(i % DIM, noise=0.1, seed=i) for i in range(len(many))])
    assert index.count() == 60
    assert index.doc_versions() == {f"d{i}": i % 3 + 1 for i in range(30)}


def test_wrong_dimension_raises_config_error(opener: Opener) -> None:
    index = opener(dim=DIM)
    index.upsert(chunks_of("a", 1), [basis(0)])
    with pytest.raises(ConfigError):
        index.upsert(chunks_of("b", 1), [[1.0] * 8])
    with pytest.raises(ConfigError):
        index.search([1.0] * 8, 1)
    index.close()

    other = opener(dim=8)
    with pytest.raises(ConfigError, match=r"(?s)(16.*8|8.*16)"):
        other.count()
    other.close()
    assert opener(dim=DIM).count() == 1  # the mismatch damaged nothing


def test_data_survives_close_and_reopen(opener: Opener) -> None:
    index = opener()
    index.upsert(
        chunks_of("a", 2, metadata={"lang": "en"}) + chunks_of("b", 1),
        [basis(0), basis(1), basis(2)],
    )
    index.close()

    reopened = opener()
    assert reopened.count() == 3
    (hit,) = reopened.search(basis(1), 1, {"lang": "en"})
    assert (hit.doc_id, hit.ordinal) == ("a", 1)
    assert reopened.doc_versions() == {"a": 1, "b": 1}
    reopened.upsert(chunks_of("a", 1), [basis(0)])  # still writable, and replacing still works
    assert reopened.count() == 2


def test_clear_empties_and_stays_usable(index: VectorIndex) -> None:
    index.upsert(chunks_of("a", 3), [basis(0), basis(1), basis(2)])
    index.clear()
    assert index.count() == 0
    assert index.doc_versions() == {}
    index.upsert(chunks_of("b", 1), [basis(4)])
    assert [h.doc_id for h in index.search(basis(4), 3)] == ["b"]


def test_hnsw_search_recall_against_exact(opener: Opener, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the exact-search threshold the HNSW path answers, with good recall."""
    rng = np.random.default_rng(42)
    n, dim = 3_000, DIM
    points = rng.standard_normal((n, dim))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    chunks = [c for i in range(n) for c in chunks_of(f"doc{i}", 1)]
    index = opener(exact_search_threshold=500)
    for start in range(0, n, 1_000):
        index.upsert(chunks[start : start + 1_000], points[start : start + 1_000].tolist())
    if isinstance(index, QdrantEdgeIndex):
        index.optimize()  # the end of a bulk load (auto-optimize may have run already)
        stats = index.stats()
        assert stats["points"] == n and stats["indexed_vectors"] >= n

    modes: list[bool] = []
    real_query = index._query

    def spy(*args: Any, exact: bool, **kwargs: Any) -> Any:
        modes.append(exact)
        return real_query(*args, exact=exact, **kwargs)

    monkeypatch.setattr(index, "_query", spy)
    queries = rng.standard_normal((50, dim))
    recalls = []
    for query in queries:
        approx = {h.chunk_id for h in index.search(query.tolist(), 10)}
        exact = {h.chunk_id for h in index.exact_search(query.tolist(), 10)}
        assert len(exact) == 10
        recalls.append(len(approx & exact) / 10)
    assert modes[0::2] == [False] * 50  # search() took the HNSW branch...
    assert modes[1::2] == [True] * 50  # ...and exact_search() did not
    assert float(np.mean(recalls)) >= 0.9
    if isinstance(index, QdrantEdgeIndex):
        # The graph is really walked, not silently full-scanned (a segment's own
        # full_scan_threshold could do that): with ef = top_k, recall drops (~0.85).
        index.hnsw_ef = 10
        low = []
        for query in queries:
            approx = {h.chunk_id for h in index.search(query.tolist(), 10)}
            exact = {h.chunk_id for h in index.exact_search(query.tolist(), 10)}
            low.append(len(approx & exact) / 10)
        assert float(np.mean(low)) < 1.0


def test_edge_small_shards_search_exactly_and_build_graphs_on_optimize(tmp_path: Path) -> None:
    index = QdrantEdgeIndex(
        tmp_path / "edge", DIM, exact_search_threshold=500, auto_optimize_after=0
    )
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((1_200, DIM)).tolist()
    index.upsert([c for i in range(1_200) for c in chunks_of(f"d{i}", 1)], vectors)
    assert index.stats()["indexed_vectors"] == 0  # Edge never indexes on its own
    index.optimize()
    assert index.stats()["indexed_vectors"] == 1_200
    assert index.optimize() is False  # nothing left to do
    index.close()


def test_edge_optimizes_automatically_after_a_backlog(tmp_path: Path) -> None:
    index = QdrantEdgeIndex(tmp_path / "edge", DIM, auto_optimize_after=1_000)
    rng = np.random.default_rng(8)
    chunks = [c for i in range(1_500) for c in chunks_of(f"d{i}", 1)]
    vectors = rng.standard_normal((1_500, DIM)).tolist()
    index.upsert(chunks[:900], vectors[:900])
    assert index.stats()["indexed_vectors"] == 0
    index.upsert(chunks[900:], vectors[900:])
    assert index.stats()["indexed_vectors"] == 1_500
    index.close()


def test_edge_shard_is_locked_to_one_opener(tmp_path: Path) -> None:
    first = QdrantEdgeIndex(tmp_path / "edge", DIM)
    assert first.count() == 0
    second = QdrantEdgeIndex(tmp_path / "edge", DIM)
    with pytest.raises(BackendUnavailable, match="open in another"):
        second.count()
    first.close()
    assert second.count() == 0
    second.close()


@pytest.mark.parametrize("backend", ["qdrant-edge", "qdrant"])
def test_factory_picks_the_configured_backend(tmp_path: Path, backend: str) -> None:
    extra: dict[str, Any] = {"qdrant_path": str(tmp_path / "local")} if backend == "qdrant" else {}
    settings = Settings(
        data_dir=tmp_path, vector_backend=backend, exact_search_threshold=7, **extra
    )
    index = open_vector_index(settings, "news", DIM)
    assert index.name == backend and index.dim == DIM
    if isinstance(index, QdrantEdgeIndex):
        assert index.path == tmp_path / "collections" / "news" / "qdrant-edge"
        assert index.exact_search_threshold == 7
    else:
        assert isinstance(index, QdrantServerIndex)
        assert index.collection == "sieve-news"
    index.upsert(chunks_of("a", 1), [basis(0)])
    assert index.count() == 1
    index.close()


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
def test_unreachable_server_is_backend_unavailable() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(
        vector_backend="qdrant", qdrant_url=f"http://127.0.0.1:{port}", qdrant_timeout_s=1
    )
    index = QdrantServerIndex(settings, DIM)
    with pytest.raises(BackendUnavailable, match="refused") as caught:
        index.search(basis(0), 3)
    assert caught.value.backend == "qdrant"
    assert "\n" not in str(caught.value)
    index.close()
    # qdrant-client checks the server version in a thread; let its warning land here.
    for thread in threading.enumerate():
        if "_check_compatibility" in thread.name:
            thread.join(timeout=5)


def test_iter_chunks_returns_every_chunk_as_written(index: VectorIndex) -> None:
    assert list(index.iter_chunks()) == []
    metadata = {"lang": "en", "tags": ["x", "y"], "nested": {"a": [1, 2]}}
    written = [*chunks_of("a", 2, version=3, metadata=metadata, title="标题"), *chunks_of("b", 1)]
    index.upsert(written, [basis(i) for i in range(len(written))])
    assert sorted(index.iter_chunks(), key=lambda c: c.id) == sorted(written, key=lambda c: c.id)


def test_meta_round_trip_where_the_backend_keeps_it(index: VectorIndex) -> None:
    from search.integrity import MetaStore

    if not isinstance(index, MetaStore):
        pytest.skip("an embedded index keeps no metadata: search.integrity uses a file")
    index.count()  # the collection exists from first use
    assert index.get_meta("sieve_test") is None
    index.set_meta("sieve_test", "one")
    index.set_meta("sieve_other", "two")
    assert (index.get_meta("sieve_test"), index.get_meta("sieve_other")) == ("one", "two")


def test_chunk_versions_are_one_documents_stored_point_ids(index: VectorIndex) -> None:
    mine, other = chunks_of("a", 2, version=3), chunks_of("b", 1)
    index.upsert([*mine, *other], [basis(i) for i in range(3)])
    assert index.chunk_versions("a") == {c.id: 3 for c in mine}
    assert index.chunk_versions("nope") == {}
    index.delete_documents(["a"])
    assert index.chunk_versions("a") == {}
    assert index.chunk_versions("b") == {other[0].id: other[0].version}
