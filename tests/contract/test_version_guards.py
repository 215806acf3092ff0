"""Out-of-order writes never replace a newer version: the indexer's registry check,
and how it reports a write an index refused.

Each index's own guard is the chunk-store contract (``support.chunk_store_contract``,
run by ``test_keyword_index.py`` and ``test_vector_index.py`` on every backend);
the requests Elasticsearch gets for it are checked in ``tests/unit/test_es_template.py``.

The tests run on real tantivy and Qdrant Edge with a SQLite registry; a small
deterministic embedder stands in for the model (what is tested is which
version lands, not the vectors).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from support.chunk_store_contract import chunks_of

from search.config import Settings
from search.errors import BackendUnavailable
from search.indexing import Indexer
from search.keyword.tantivy_index import TantivyKeywordIndex
from search.registry import BACKENDS, Registry
from search.types import Document
from search.vector.edge import QdrantEdgeIndex

DIM = 16


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


@pytest.mark.unit
def test_a_write_an_index_refuses_is_reported_and_not_acknowledged(indexer: Indexer) -> None:
    registry = indexer.registry
    (staged,) = registry.stage("c", [doc("d1", "apple orchard")])
    # The keyword index holds a newer version than the registry (a registry
    # restored from an older backup, say): that index must refuse version 1.
    indexer.keyword.upsert(chunks_of("d1", 1, version=5), [["newer"]])

    report = indexer.rewrite([(staged.document, staged.version)], BACKENDS)
    assert (report.indexed, report.chunks, report.failed) == (0, 0, {})
    assert list(report.refused) == ["d1"]
    assert "keyword" in report.refused["d1"] and "version 5" in report.refused["d1"]
    assert indexer.keyword.doc_versions() == {"d1": 5}  # never applied
    assert indexer.vector.doc_versions() == {"d1": 1}  # the other index took it
    row = registry.get("c", "d1")
    assert (row.keyword_version, row.vector_version, row.status) == (None, 1, "pending")

    merged = indexer.rewrite([(staged.document, staged.version)], ["vector"])
    merged.merge(report)
    assert list(merged.refused) == ["d1"] and merged.indexed == 1
