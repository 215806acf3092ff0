"""A registry that is empty, missing, replaced or corrupt is reported, never trusted.

Real engines (tantivy, Qdrant Edge, MiniLM) over the sample corpus in two
collections; the command line runs as a real process. In every damaged case
each index holds exactly what it held before.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.app import create_app
from api.settings import ServiceSettings
from search.config import Settings
from search.engine import SearchEngine
from search.errors import RegistryCorrupt, RegistryError, RegistryMismatch
from search.ingest import iter_paths
from search.keyword import open_keyword_index
from search.reconcile import known_collections, reconcile, reconcile_all
from search.recover import reassemble, recover_registry
from search.registry import Registry
from search.text import clean_text, make_chunks
from search.types import Chunk, Document, SearchRequest, chunk_id
from search.vector import open_vector_index

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample"
COLLECTIONS = ("default", "docs")
DIM = 384  # the bundled MiniLM


def make_settings(data_dir: Path) -> Settings:
    # Small chunks: documents span several chunks that overlap.
    return Settings.from_env({}).with_overrides(
        data_dir=data_dir, rerank_backend="none", chunk_tokens=40, chunk_overlap=10
    )


@pytest.fixture(scope="module")
def corpus() -> list[Document]:
    return [d for d in iter_paths([SAMPLE / "corpus.jsonl"]) if isinstance(d, Document)][:16]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, corpus) -> Path:
    """A data dir with the corpus split over two collections, one document at version 2."""
    data_dir = tmp_path_factory.mktemp("pristine")
    with SearchEngine(make_settings(data_dir)) as engine:
        assert engine.index(corpus[:10]).indexed == 10
        assert engine.index(corpus[10:], "docs").indexed == 6
        changed = Document(id=corpus[0].id, text=corpus[0].text + " Revised.", title="Revised")
        assert engine.index([changed]).indexed == 1
    return data_dir


@pytest.fixture
def data_dir(pristine, tmp_path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(pristine, target)
    return target


@pytest.fixture
def engine(data_dir) -> Iterator[SearchEngine]:
    eng = SearchEngine(make_settings(data_dir))
    yield eng
    eng.close()


def index_state(data_dir: Path) -> dict[str, tuple[dict[str, int], dict[str, int]]]:
    """Per collection, each index's {doc id: version}, read beside any registry."""
    settings = make_settings(data_dir)
    out = {}
    for name in COLLECTIONS:
        keyword, vector = open_keyword_index(settings, name), open_vector_index(settings, name, DIM)
        out[name] = (keyword.doc_versions(), vector.doc_versions())
        keyword.close()
        vector.close()
    return out


def registry_file(data_dir: Path) -> Path:
    return data_dir / "registry.db"


def damage(data_dir: Path, how: str, tmp_path: Path) -> None:
    path = registry_file(data_dir)
    for extra in ("-wal", "-shm"):
        path.with_name(path.name + extra).unlink(missing_ok=True)
    if how == "zero-bytes":
        path.write_bytes(b"")
    elif how == "deleted":
        path.unlink()
    elif how == "replaced":
        path.unlink()
        other = Registry(f"sqlite:///{tmp_path / 'other.db'}")
        other.stage("default", [Document(id="someone-else", text="another corpus")])
        other.close()
        shutil.copy(tmp_path / "other.db", path)
    elif how == "corrupt-pages":
        size = path.stat().st_size
        assert size >= 8 * 4096, "too small a registry to damage in the middle"
        with path.open("r+b") as f:
            f.seek((size // 4096 // 2) * 4096)
            f.write(os.urandom(3 * 4096))
    else:
        raise AssertionError(how)


EXPECTED = {
    "zero-bytes": (RegistryMismatch, "missing or empty"),
    "deleted": (RegistryMismatch, "missing or empty"),
    "replaced": (RegistryMismatch, "replaced"),
    "corrupt-pages": (RegistryCorrupt, "corrupt"),
}


def sieve(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SIEVE_RERANK_BACKEND": "none"}
    env.pop("SIEVE_REGISTRY_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "api", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


@pytest.mark.parametrize("how", sorted(EXPECTED))
def test_an_untrusted_registry_is_reported_and_nothing_is_deleted(data_dir, tmp_path, how):
    before = index_state(data_dir)
    damage(data_dir, how, tmp_path)
    error, words = EXPECTED[how]

    # The operator's commands, as real processes: one line each, no traceback.
    for args in (("reconcile",), ("stats",)):
        done = sieve(data_dir, *args)
        assert done.returncode != 0, done.stdout
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert words in lines[0] and "recover-registry" in lines[0]
        if error is RegistryMismatch:
            assert str(data_dir) in lines[0]

    with SearchEngine(make_settings(data_dir)) as engine:
        with pytest.raises(error, match=words):
            reconcile_all(engine)
        with pytest.raises(RegistryError):
            engine.stats("docs")
        client = create_app(ServiceSettings(engine=engine.settings), engine).test_client()
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json["ready"] is False
        assert ready.json["reason"].startswith("registry: error: Registry")
        assert words in ready.json["backends"]["registry"]
        search = client.post("/v1/search", json={"query": "storm"})
        assert search.status_code == 503
        assert search.json["error"]["code"] in ("registry_mismatch", "registry_corrupt")

    assert index_state(data_dir) == before


def test_reconcile_covers_every_collection_and_a_dry_run_lists_its_deletions(engine):
    default, docs = engine.collection(), engine.collection("docs")
    orphan = make_chunks("orphan-doc", "orphan words nobody registered", version=1)
    default.keyword.upsert(orphan, [["orphan", "word"]])
    victim = sorted(engine.registry.versions("docs"))[0]
    docs.vector.delete_documents([victim])
    # A collection that only the data dir knows is checked too.
    (engine.settings.data_dir / "collections" / "stray").mkdir()
    assert known_collections(engine) == ["default", "docs", "stray"]

    dry = {r.collection: r for r in reconcile_all(engine, repair=False)}
    assert sorted(dry) == ["default", "docs", "stray"] and dry["stray"].total == 0
    assert dry["docs"].differences["vector"].missing == [victim]
    assert dry["default"].dry_run and not dry["default"].repaired
    assert dry["default"].deletions() == {"keyword": ["orphan-doc"], "vector": []}
    assert "  keyword: would delete orphan-doc" in dry["default"].lines()
    assert dry["default"].to_dict()["indexes"]["keyword"]["orphan_ids"] == ["orphan-doc"]
    assert "orphan-doc" in default.keyword.doc_versions()  # a dry run changes nothing
    assert victim not in docs.vector.doc_versions()

    fixed = {r.collection: r for r in reconcile_all(engine, ["docs", "default"])}
    assert list(fixed) == ["default", "docs"]
    assert fixed["default"].repaired and fixed["docs"].repaired
    assert all(r.total == 0 for r in reconcile_all(engine, repair=False))


def test_deleting_a_large_share_of_an_index_needs_force(engine):
    col = engine.collection()
    held = sorted(engine.registry.versions(col.name))
    # Behind the indexes' back: the registry forgets 3 of 10 documents.
    engine.registry.delete(col.name, held[:3])
    before = (col.keyword.doc_versions(), col.vector.doc_versions())

    dry = reconcile(col.indexer, repair=False)
    assert dry.deletions() == {"keyword": held[:3], "vector": held[:3]}
    assert set(dry.refused) == {"keyword", "vector"}
    assert "would delete 3 of 10 documents" in dry.refused["keyword"]

    refused = reconcile(col.indexer)
    assert refused.refused and not refused.repaired
    assert (col.keyword.doc_versions(), col.vector.doc_versions()) == before
    assert any(line.startswith("  refused: ") for line in refused.lines())

    assert not reconcile(col.indexer, repair=False, max_delete_share=0.5).refused
    forced = reconcile(col.indexer, force=True)
    assert forced.repaired and not forced.refused
    assert set(col.keyword.doc_versions()) == set(held[3:]) == set(col.vector.doc_versions())


def test_the_share_setting_comes_from_the_environment():
    settings = Settings.from_env({"SIEVE_RECONCILE_MAX_DELETE_SHARE": "0.25"})
    assert settings.reconcile_max_delete_share == 0.25
    assert Settings.from_env({}).reconcile_max_delete_share == 0.1


def _registry_contents(data_dir: Path) -> dict[str, dict[str, tuple]]:
    reg = Registry(make_settings(data_dir).registry)
    out = {}
    for name in COLLECTIONS:
        out[name] = {
            doc_id: (
                record.version,
                record.title,
                dict(record.metadata),
                " ".join(clean_text(record.text, record.content_type).split()),
            )
            for doc_id, record in reg.records(name, sorted(reg.versions(name))).items()
        }
    reg.close()
    return out


@pytest.mark.parametrize("how", ["deleted", "zero-bytes", "corrupt-pages", "replaced"])
def test_recover_registry_restores_ids_versions_and_text(data_dir, tmp_path, how):
    original = _registry_contents(data_dir)
    assert original["default"] and any(v[0] == 2 for v in original["default"].values())
    before = index_state(data_dir)
    damage(data_dir, how, tmp_path)

    with SearchEngine(make_settings(data_dir)) as engine:
        if how == "replaced":
            with pytest.raises(RegistryMismatch, match="replace"):
                recover_registry(engine)
        report = recover_registry(engine, replace=how == "replaced")
        assert report.documents == {"default": 10, "docs": 6} and not report.partial
        if how in ("corrupt-pages", "replaced"):
            assert report.moved_aside and Path(report.moved_aside).exists()
        # The indexes take the new registry as their own: nothing to repair.
        reports = reconcile_all(engine, repair=False)
        assert [r.total for r in reports] == [0, 0]
        assert engine.search(SearchRequest(query="storm", mode="bm25")).hits is not None

    restored = _registry_contents(data_dir)
    for name in COLLECTIONS:
        assert restored[name].keys() == original[name].keys()
        for doc_id, (version, title, metadata, text) in original[name].items():
            assert restored[name][doc_id] == (version, title, metadata, text), doc_id
    assert index_state(data_dir) == before
    # A later process opens the recovered data dir as any other.
    done = sieve(data_dir, "reconcile", "--dry-run")
    assert done.returncode == 0 and "0 difference(s)" in done.stdout, done.stderr


def test_the_command_line_recovers_then_reconciles_every_collection(data_dir, tmp_path):
    before = index_state(data_dir)
    damage(data_dir, "deleted", tmp_path)
    done = sieve(data_dir, "recover-registry")
    assert done.returncode == 0, done.stderr
    assert "default" in done.stdout and "docs" in done.stdout
    check = sieve(data_dir, "reconcile", "--dry-run", "--json")
    assert check.returncode == 0, check.stderr
    reports = [json.loads(line) for line in check.stdout.splitlines()]
    assert {r["collection"] for r in reports} >= set(COLLECTIONS)
    assert all(r["total"] == 0 and r["dry_run"] for r in reports)
    assert index_state(data_dir) == before


def test_recovery_leaves_a_lagging_index_for_reconcile(data_dir, corpus):
    with SearchEngine(make_settings(data_dir)) as engine:
        col = engine.collection("docs")
        lagging = corpus[10].id
        col.vector.delete_documents([lagging])
    damage(data_dir, "deleted", data_dir)
    with SearchEngine(make_settings(data_dir)) as engine:
        report = recover_registry(engine)
        assert report.partial == {"docs": [lagging]}
        record = engine.registry.get("docs", lagging)
        assert (record.keyword_version, record.vector_version, record.status) == (
            1,
            None,
            "pending",
        )
        (fix,) = reconcile_all(engine, ["docs"])
        assert fix.differences["vector"].missing == [lagging] and fix.repaired
        assert all(r.total == 0 for r in reconcile_all(engine, repair=False))


@pytest.mark.unit
def test_reassemble_takes_overlaps_once_and_keeps_offsets():
    text = "One two three. Four five six.  Seven eight. Nine ten eleven twelve."

    def span(ordinal: int, start: int, end: int) -> Chunk:
        return Chunk(chunk_id("d", ordinal), "d", ordinal, text[start:end], start, end)

    # Overlapping (0 and 1), then a gap of stripped whitespace (before 2).
    chunks = [span(0, 0, 29), span(1, 15, 29), span(2, 31, 43), span(3, 31, len(text))]
    assert reassemble(reversed(chunks)) == text
    gapped = reassemble([chunks[0], chunks[3]])
    assert gapped == text[:29] + "  " + text[31:]
    assert all(gapped[c.start : c.end] == c.text for c in (chunks[0], chunks[3]))


def test_a_corrupt_registry_file_is_set_aside_not_deleted(data_dir, tmp_path):
    damage(data_dir, "corrupt-pages", tmp_path)
    damaged = registry_file(data_dir).read_bytes()
    with SearchEngine(make_settings(data_dir)) as engine:
        report = recover_registry(engine)
    assert Path(report.moved_aside).read_bytes() == damaged
    conn = sqlite3.connect(registry_file(data_dir))
    assert conn.execute("PRAGMA quick_check").fetchone() == ("ok",)
    conn.close()
