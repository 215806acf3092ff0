"""The reconciler and rebuilds on real engines: drift is found, repaired, and gone after."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.config import Settings
from search.engine import SearchEngine
from search.ingest import iter_paths
from search.reconcile import rebuild, reconcile
from search.text import make_chunks
from search.types import Document, SearchRequest, chunk_id

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "sample"


@pytest.fixture
def engine(tmp_path):
    settings = Settings.from_env({}).with_overrides(data_dir=tmp_path, rerank_backend="none")
    eng = SearchEngine(settings)
    docs = [d for d in iter_paths([SAMPLE / "corpus.jsonl"]) if isinstance(d, Document)][:12]
    assert eng.index(docs).indexed == 12
    yield eng
    eng.close()


def test_in_sync_collection_has_no_difference(engine):
    report = reconcile(engine.collection().indexer)
    assert report.total == 0 and not report.failed


def test_missing_stale_and_orphan_documents_are_repaired(engine):
    col = engine.collection()
    ids = sorted(engine.registry.versions(col.name))
    # Drift behind the registry's back: a document gone from the vector index,
    # one gone from BM25, and an orphan only BM25 knows.
    col.vector.delete_documents([ids[0]])
    col.keyword.delete_documents([ids[1]])
    orphan = make_chunks("orphan-doc", "orphan words nobody registered", version=1)
    col.keyword.upsert(orphan, [["orphan", "word"]])

    dry = reconcile(col.indexer, repair=False)
    assert dry.differences["vector"].missing == [ids[0]]
    assert dry.differences["keyword"].missing == [ids[1]]
    assert dry.differences["keyword"].orphans == ["orphan-doc"]
    assert dry.total == 3 and not dry.repaired

    fixed = reconcile(col.indexer)
    assert fixed.repaired and fixed.total == 3
    assert reconcile(col.indexer, repair=False).total == 0
    hits = engine.search(SearchRequest(query="orphan words", mode="bm25")).hits
    assert "orphan-doc" not in [h.doc_id for h in hits]
    assert col.keyword.count() == col.vector.count() == engine.stats()["chunks"]


def test_stale_version_is_rewritten(engine):
    col = engine.collection()
    doc_id = sorted(engine.registry.versions(col.name))[2]
    row = engine.registry.get(col.name, doc_id)
    old = make_chunks(doc_id, "an outdated text", version=row.version - 1 or 99)
    col.keyword.upsert(old, [["outdat", "text"]])
    report = reconcile(col.indexer)
    assert report.differences["keyword"].stale == [doc_id] and report.repaired
    assert col.keyword.doc_versions()[doc_id] == row.version
    # The outdated text is gone: its token no longer matches the document.
    assert chunk_id(doc_id, 0) not in {h.chunk_id for h in col.keyword.search(["outdat"], 5)}


@pytest.mark.parametrize("target", ["keyword", "vector", "all"])
def test_rebuild_from_the_registry_alone(engine, target):
    col = engine.collection()
    before = (col.keyword.count(), col.vector.count())
    (col.keyword if target == "keyword" else col.vector).clear()
    assert rebuild(col.indexer, target) == 12
    assert (col.keyword.count(), col.vector.count()) == before
    assert reconcile(col.indexer, repair=False).total == 0
