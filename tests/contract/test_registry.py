"""The registry contract, on SQLite (always) and PostgreSQL (the server on this machine).

The same SQLAlchemy code serves both; PostgreSQL tests create their own
database and drop it afterwards. ``SIEVE_TEST_PG_URL`` names the server's
admin URL (default: the local server, user postgres).
"""

import pytest
from sqlalchemy import text

from search.registry import Registry, content_hash
from search.types import Document


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.unit),
        pytest.param("postgresql", marks=pytest.mark.integration),
    ]
)
def registry(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    reg = Registry(url)
    yield reg
    if request.param == "postgresql":
        with reg.engine.begin() as conn:
            conn.execute(text("DELETE FROM documents"))
    reg.close()


def doc(doc_id="d1", text="hello world", **kw):
    return Document(id=doc_id, text=text, **kw)


def test_new_document_gets_version_1_and_needs_indexing(registry):
    (staged,) = registry.stage("c", [doc()])
    assert staged.version == 1 and staged.needs_indexing
    assert registry.get("c", "d1").status == "pending"


def test_unchanged_indexed_document_is_a_no_op(registry):
    registry.stage("c", [doc()])
    registry.mark_indexed("c", "d1", 1, ("keyword", "vector"), chunks=2)
    (staged,) = registry.stage("c", [doc()])
    assert staged.version == 1 and not staged.needs_indexing
    assert registry.get("c", "d1").status == "indexed"


def test_unchanged_but_half_indexed_document_is_indexed_again(registry):
    registry.stage("c", [doc()])
    registry.mark_indexed("c", "d1", 1, ("keyword",), chunks=2)
    assert registry.get("c", "d1").status == "pending"
    (staged,) = registry.stage("c", [doc()])
    assert staged.needs_indexing and staged.version == 1


def test_changed_document_gets_next_version(registry):
    registry.stage("c", [doc()])
    registry.mark_indexed("c", "d1", 1, ("keyword", "vector"), chunks=1)
    for change in (doc(text="new"), doc(title="t"), doc(metadata={"a": 1})):
        (staged,) = registry.stage("c", [change])
        assert staged.needs_indexing
    assert registry.get("c", "d1").version == 4


def test_stale_acknowledgement_never_marks_a_newer_version(registry):
    registry.stage("c", [doc()])
    registry.stage("c", [doc(text="v2")])
    registry.mark_indexed("c", "d1", 1, ("keyword", "vector"), chunks=1)
    row = registry.get("c", "d1")
    assert row.version == 2 and row.keyword_version is None and row.status == "pending"


def test_failure_is_recorded_with_its_reason(registry):
    registry.stage("c", [doc()])
    registry.mark_failed("c", "d1", 1, "boom")
    row = registry.get("c", "d1")
    assert row.status == "failed" and row.error == "boom"
    assert registry.stats("c")["failed"] == 1


def test_collections_are_separate_and_delete_counts(registry):
    registry.stage("a", [doc("x"), doc("y")])
    registry.stage("b", [doc("x")])
    assert registry.versions("a") == {"x": 1, "y": 1}
    assert registry.delete("a", ["x", "nope"]) == 1
    assert registry.delete("a", []) == 0
    assert registry.versions("a") == {"y": 1} and registry.versions("b") == {"x": 1}
    assert sorted(registry.collections()) == ["a", "b"]


def test_duplicate_ids_in_one_batch_last_wins(registry):
    staged = registry.stage("c", [doc(text="first"), doc(text="second")])
    assert len(staged) == 1 and staged[0].document.text == "second"


def test_iter_documents_round_trips_everything(registry):
    docs = [doc(f"d{i:03}", f"text {i}", title=f"t{i}", metadata={"i": i}) for i in range(7)]
    registry.stage("c", docs)
    back = list(registry.iter_documents("c", batch=3))
    assert [d for d, _ in back] == docs
    assert all(v == 1 for _, v in back)


@pytest.mark.unit
def test_content_hash_depends_on_content_only():
    assert content_hash(doc()) == content_hash(doc(source="elsewhere"))
    assert content_hash(doc()) != content_hash(doc(content_type="html"))


@pytest.mark.unit
def test_registry_persists_across_instances(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    first = Registry(url)
    first.stage("c", [doc()])
    first.close()
    assert Registry(url).versions("c") == {"d1": 1}
