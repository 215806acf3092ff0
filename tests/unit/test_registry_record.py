"""The version rule on ``DocumentRecord``: which backends are behind, and when it is indexed."""

import dataclasses
from datetime import UTC, datetime

import pytest

from search.registry import BACKENDS, DocumentRecord
from search.types import Document

pytestmark = pytest.mark.unit


def record(version=2, keyword_version=None, vector_version=None, **kw):
    fields = {
        "collection": "c",
        "id": "d1",
        "version": version,
        "content_hash": "h",
        "title": "t",
        "text": "body",
        "metadata": {"lang": "en"},
        "content_type": "markdown",
        "source": "s.md",
        "status": "pending",
        "keyword_version": keyword_version,
        "vector_version": vector_version,
        "chunks": 0,
        "error": None,
        "updated_at": datetime(2024, 1, 1, tzinfo=UTC),
    }
    return DocumentRecord(**{**fields, **kw})


@pytest.mark.parametrize(
    ("keyword_version", "vector_version", "behind"),
    [
        (2, 2, ()),
        (None, None, ("keyword", "vector")),
        (None, 2, ("keyword",)),
        (2, None, ("vector",)),
        (1, 2, ("keyword",)),
        (2, 1, ("vector",)),
        (1, 1, ("keyword", "vector")),
        (1, None, ("keyword", "vector")),
        # Newer than the registry cannot be written (the version guards), but it
        # is not the current version either.
        (3, 2, ("keyword",)),
    ],
)
def test_behind_and_indexed_for_each_combination(keyword_version, vector_version, behind):
    rec = record(2, keyword_version, vector_version)
    assert rec.behind() == behind
    assert rec.indexed is (behind == ())


def test_behind_names_backends_in_their_order():
    assert record(5).behind() == BACKENDS


def test_indexed_follows_versions_not_status():
    assert record(1, 1, 1, status="failed").indexed
    assert not record(2, 1, 1, status="indexed").indexed


def test_document_round_trips_the_stored_fields():
    rec = record()
    assert rec.document() == Document(
        id="d1",
        text="body",
        title="t",
        metadata={"lang": "en"},
        source="s.md",
        content_type="markdown",
    )


def test_record_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        record().version = 3  # type: ignore[misc]
