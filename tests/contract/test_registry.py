"""The registry contract, on SQLite (always) and PostgreSQL (the server on this machine).

Records, not ORM rows, leave the registry: every public method is checked.

The same SQLAlchemy code serves both; PostgreSQL tests create their own
database and drop it afterwards. ``SIEVE_TEST_PG_URL`` names the server's
admin URL (default: the local server, user postgres).
"""

import dataclasses
from types import MappingProxyType

import pytest
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import text
from sqlalchemy.orm import InstanceState

from search.registry import DocumentRecord, Registry, content_hash
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


def test_records_carry_what_the_registry_holds(registry):
    registry.stage("c", [doc(title="t", metadata={"a": 1}, source="s", content_type="html")])
    registry.mark_indexed("c", "d1", 1, ("keyword",), chunks=3)
    record = registry.get("c", "d1")
    assert isinstance(record, DocumentRecord)
    assert (record.collection, record.id, record.version) == ("c", "d1", 1)
    assert record.content_hash == content_hash(
        doc(title="t", metadata={"a": 1}, content_type="html")
    )
    assert (record.title, record.text, record.source) == ("t", "hello world", "s")
    assert record.metadata == {"a": 1} and record.content_type == "html"
    assert (record.keyword_version, record.vector_version, record.chunks) == (1, None, 3)
    assert record.behind() == ("vector",) and not record.indexed
    assert record.status == "pending" and record.error is None and record.updated_at is not None
    assert registry.get("c", "nope") is None


def test_records_are_frozen_and_detached(registry):
    registry.stage("c", [doc(metadata={"a": 1})])
    record = registry.get("c", "d1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.status = "indexed"
    with pytest.raises(TypeError):
        record.metadata["a"] = 2
    assert registry.get("c", "d1").metadata == {"a": 1}
    assert registry.records("c", ["d1", "nope"]) == {"d1": record}


def _orm_objects(value):
    """Every ORM-mapped object reachable from a return value."""
    if isinstance(sa_inspect(value, raiseerr=False), InstanceState):
        return [value]
    if isinstance(value, dict | MappingProxyType):
        return [o for k, v in value.items() for o in _orm_objects(k) + _orm_objects(v)]
    if isinstance(value, list | tuple | set):
        return [o for item in value for o in _orm_objects(item)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [o for f in dataclasses.fields(value) for o in _orm_objects(getattr(value, f.name))]
    return []


def test_no_public_method_returns_an_orm_object(registry):
    calls = {
        "stage": lambda: registry.stage("c", [doc("a"), doc("b")]),
        "mark_indexed": lambda: registry.mark_indexed("c", "a", 1, ("keyword", "vector"), 1),
        "mark_failed": lambda: registry.mark_failed("c", "b", 1, "boom"),
        "get": lambda: registry.get("c", "a"),
        "records": lambda: registry.records("c", ["a", "b", "nope"]),
        "existing": lambda: registry.existing("c", ["a", "nope"]),
        "versions": lambda: registry.versions("c"),
        "stats": lambda: registry.stats("c"),
        "iter_documents": lambda: list(registry.iter_documents("c", batch=1)),
        "collections": lambda: registry.collections(),
        "add_collection": lambda: registry.add_collection("e"),
        "collection_names": lambda: registry.collection_names(),
        "has_collection": lambda: registry.has_collection("e"),
        "ping": lambda: registry.ping(),
        "delete": lambda: registry.delete("c", ["b"]),
        "drop_collection": lambda: registry.drop_collection("e"),
        "close": lambda: registry.close(),
    }
    public = {
        name
        for name, member in vars(Registry).items()
        if callable(member) and not name.startswith("_")
    }
    assert set(calls) == public, "a new public method needs a case here"
    returned = {name: call() for name, call in calls.items()}
    assert {
        name: _orm_objects(value) for name, value in returned.items() if _orm_objects(value)
    } == {}
    assert returned["records"] and returned["iter_documents"] and returned["stage"]
