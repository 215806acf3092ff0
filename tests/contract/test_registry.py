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

from search.errors import InvalidRequest, RegistryMismatch
from search.records import ListFilter
from search.registry import SCHEMA_VERSION, DocumentRecord, Registry, Restored, content_hash
from search.types import Document


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


def _set_identity_when_empty(registry):
    with registry.engine.begin() as conn:
        conn.execute(text("DELETE FROM documents"))
    registry.set_identity(registry.identity.id)


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
        "list_documents": lambda: registry.list_documents("c", "", 5),
        "collections": lambda: registry.collections(),
        "add_collection": lambda: registry.add_collection("e"),
        "collection_names": lambda: registry.collection_names(),
        "has_collection": lambda: registry.has_collection("e"),
        "set_collection_setting": lambda: registry.set_collection_setting("e", "k", {"w": 1}),
        "collection_setting": lambda: registry.collection_setting("e", "k"),
        "ping": lambda: registry.ping(),
        "delete": lambda: registry.delete("c", ["b"]),
        "restore": lambda: registry.restore("r", [Restored(doc("x"), 2, 2, 1, 1)]),
        "drop_collection": lambda: registry.drop_collection("e"),
        "set_identity": lambda: _set_identity_when_empty(registry),
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


# -- identity, schema version, recovery writes ----------------------------------


def test_identity_is_written_once_and_read_by_every_instance(registry):
    identity = registry.identity
    assert len(identity.id) == 32 and identity.schema_version == SCHEMA_VERSION
    other = Registry(registry.url)
    assert other.identity.id == identity.id and not other.identity.created
    other.close()


def test_a_registry_of_another_schema_version_is_refused(registry):
    from search.errors import RegistryCorrupt

    registry.ping()
    with registry.engine.begin() as conn:
        conn.execute(text("UPDATE sieve_meta SET value = '99' WHERE key = 'schema_version'"))
    try:
        newer = Registry(registry.url)
        with pytest.raises(RegistryCorrupt, match="schema version 99"):
            newer.versions("c")
        newer.close()
    finally:
        with registry.engine.begin() as conn:
            conn.execute(text("UPDATE sieve_meta SET value = '1' WHERE key = 'schema_version'"))


def test_set_identity_only_while_empty_and_it_persists(registry):
    original = registry.identity.id
    registry.set_identity("f" * 32)
    try:
        assert registry.identity.id == "f" * 32
        assert Registry(registry.url).identity.id == "f" * 32
        registry.stage("c", [doc()])
        with pytest.raises(RegistryMismatch, match="holds documents"):
            registry.set_identity("e" * 32)
        assert registry.identity.id == "f" * 32
    finally:
        registry.delete("c", ["d1"])
        registry.set_identity(original)


def test_ping_notices_a_registry_replaced_under_it(registry):
    original = registry.identity.id
    registry.ping()
    other = Registry(registry.url)
    other.set_identity("a" * 32)
    try:
        with pytest.raises(RegistryMismatch, match="replaced while Sieve ran"):
            registry.ping()
    finally:
        other.set_identity(original)
        other.close()
    registry.ping()


def test_restore_writes_versions_and_per_index_state(registry):
    registry.stage("r", [doc("old", text="to be replaced")])
    items = [
        Restored(doc("a", "alpha", title="A", metadata={"k": "v"}), 3, 3, 3, 2),
        Restored(doc("b", "beta"), 2, 2, 1, 1),
        Restored(doc("old", "restored"), 5, None, 5, 1),
    ]
    assert registry.restore("r", items) == 3
    assert registry.restore("r", []) == 0
    a, b, old = (registry.get("r", i) for i in ("a", "b", "old"))
    assert (a.version, a.status, a.chunks, a.title) == (3, "indexed", 2, "A")
    assert a.metadata == {"k": "v"} and a.content_hash == content_hash(items[0].document)
    assert (b.version, b.keyword_version, b.vector_version, b.status) == (2, 2, 1, "pending")
    assert b.behind() == ("vector",)
    assert (old.text, old.version, old.behind()) == ("restored", 5, ("keyword",))
    assert registry.versions("r") == {"a": 3, "b": 2, "old": 5}
    assert "r" in registry.collection_names()
    # A later upsert of unchanged content is a no-op; a change gets the next version.
    (same,) = registry.stage("r", [items[0].document])
    assert not same.needs_indexing and same.version == 3
    (changed,) = registry.stage("r", [doc("a", "alpha, edited", title="A", metadata={"k": "v"})])
    assert changed.version == 4
    registry.drop_collection("r")


# -- SQLite files that are not what they seem ----------------------------------


@pytest.mark.unit
def test_an_empty_or_missing_sqlite_file_is_a_new_registry(tmp_path):
    (tmp_path / "zero.db").write_bytes(b"")
    for name in ("zero.db", "missing.db"):
        reg = Registry(f"sqlite:///{tmp_path / name}")
        assert reg.identity.created
        reg.close()
        assert not Registry(f"sqlite:///{tmp_path / name}").identity.created


@pytest.mark.unit
def test_a_registry_from_before_the_meta_table_is_upgraded(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    reg = Registry(url)
    reg.stage("c", [doc()])
    with reg.engine.begin() as conn:
        conn.execute(text("DROP TABLE sieve_meta"))
    reg.close()
    old = Registry(url)
    assert not old.identity.created and old.versions("c") == {"d1": 1}
    assert Registry(url).identity.id == old.identity.id


@pytest.mark.unit
def test_damaged_sqlite_files_are_corrupt_not_internal_errors(tmp_path):
    import os
    import sqlite3

    from search.errors import RegistryCorrupt

    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(8192))
    with pytest.raises(RegistryCorrupt, match="not a database") as caught:
        Registry(f"sqlite:///{junk}").stats("c")
    assert "\n" not in str(caught.value) and "recover-registry" in str(caught.value)

    path = tmp_path / "pages.db"
    reg = Registry(f"sqlite:///{path}")
    reg.stage("c", [doc(f"d{i}", "words " * 300) for i in range(200)])
    reg.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 2)
        f.write(os.urandom(16 * 4096))
    damaged = Registry(f"sqlite:///{path}")
    for call in (lambda: damaged.identity, damaged.ping, lambda: damaged.stats("c")):
        with pytest.raises(RegistryCorrupt):
            call()


def test_documents_are_listed_in_id_order_a_page_at_a_time(registry):
    registry.stage("c", [doc(f"d{i}", title=f"T{i}") for i in (3, 1, 2)])
    registry.stage("other", [doc("a")])
    registry.mark_indexed("c", "d1", 1, ("keyword", "vector"), chunks=2)
    registry.mark_failed("c", "d2", 1, "no text")
    first = registry.list_documents("c", "", 2)
    assert [(d.id, d.title, d.status, d.chunks, d.error) for d in first] == [
        ("d1", "T1", "indexed", 2, None),
        ("d2", "T2", "failed", 0, "no text"),
    ]
    assert dataclasses.is_dataclass(first[0]) and first[0].updated_at is not None
    assert [d.id for d in registry.list_documents("c", "d2", 2)] == ["d3"]
    assert registry.list_documents("c", "d3", 2) == []
    assert registry.list_documents("none", "", 5) == []


def test_listing_filters_by_prefix_state_and_metadata_in_pages(registry):
    registry.stage(
        "c",
        [
            doc("faq/1", metadata={"lang": "en", "rank": 5, "draft": True}),
            doc("faq/2", metadata={"lang": "de", "rank": "5", "draft": "true"}),
            doc("faq_3", metadata={"lang": "en", "rank": 5.0, "draft": False}),
            doc("faq/4", metadata={"lang": "en", "nested": {"lang": "en"}}),
            doc("guide", metadata={"lang": "en"}),
        ],
    )
    registry.stage("other", [doc("faq/9", metadata={"lang": "en"})])
    registry.mark_indexed("c", "faq/1", 1, ("keyword", "vector"), chunks=1)
    registry.mark_failed("c", "faq/4", 1, "no text")

    def ids(where, after="", limit=10):
        return [d.id for d in registry.list_documents("c", after, limit, where)]

    assert ids(ListFilter(prefix="faq/")) == ["faq/1", "faq/2", "faq/4"]
    assert ids(ListFilter(prefix="faq_")) == ["faq_3"]  # "_" is no LIKE wildcard here
    assert ids(ListFilter(prefix="faq%")) == []
    assert ids(ListFilter(status="pending")) == ["faq/2", "faq_3", "guide"]
    assert ids(ListFilter(status="failed")) == ["faq/4"]
    en = {"lang": ("en",)}
    assert ids(ListFilter(metadata=en)) == ["faq/1", "faq/4", "faq_3", "guide"]
    assert ids(ListFilter(metadata={"lang": ("en", "de")}, prefix="faq/")) == [
        "faq/1", "faq/2", "faq/4",
    ]  # fmt: skip
    # As facet terms: an integer or its decimal string; a boolean or "true"; never a float.
    assert ids(ListFilter(metadata={"rank": ("5",)})) == ["faq/1", "faq/2"]
    assert ids(ListFilter(metadata={"draft": ("true",)})) == ["faq/1", "faq/2"]
    assert ids(ListFilter(metadata={"draft": ("false",)})) == ["faq_3"]
    assert ids(ListFilter(metadata={"nested.lang": ("en",)})) == []
    assert ids(ListFilter(status="pending", metadata=en)) == ["faq_3", "guide"]
    # Pages of a filtered listing: full pages, then the rest after the last id.
    assert ids(ListFilter(metadata=en), limit=2) == ["faq/1", "faq/4"]
    assert ids(ListFilter(metadata=en), after="faq/4", limit=2) == ["faq_3", "guide"]
    assert ids(ListFilter(metadata=en), after="guide", limit=2) == []


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"status": "done"}, "status: one of pending, indexed, failed, not 'done'"),
        ({"prefix": "x" * 513}, "prefix: at most 512 characters, not 513"),
        ({"metadata": {"a b": ("x",)}}, "metadata filter key 'a b'"),
        ({"metadata": {"a": ()}}, "metadata filter 'a' has no value"),
    ],
)
@pytest.mark.unit
def test_a_bad_listing_filter_is_refused_in_one_line(where, message):
    with pytest.raises(InvalidRequest) as caught:
        ListFilter(**where)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_collection_settings_are_stored_replaced_and_dropped_with_the_collection(registry):
    assert registry.collection_setting("c", "rerank_blend") is None
    registry.set_collection_setting("c", "rerank_blend", {"weight": 0.5})
    registry.set_collection_setting("c", "rerank_blend", {"weight": 1.5, "chosen_on": "x/dev"})
    registry.set_collection_setting("other", "rerank_blend", {"weight": 3.0})
    assert registry.collection_setting("c", "rerank_blend") == {"weight": 1.5, "chosen_on": "x/dev"}
    registry.drop_collection("c")
    assert registry.collection_setting("c", "rerank_blend") is None
    assert registry.collection_setting("other", "rerank_blend") == {"weight": 3.0}
