"""The versioned chunk store's contract, as mixins named by behaviour.

Every index backend (tantivy, Elasticsearch, Qdrant Edge, qdrant-client local
mode, a Qdrant server) stores chunks under one rule (``search.store``): an
older write is refused and reported, never applied; a newer one replaces
every chunk of its document; the same version again changes nothing. A test
module mixes these (all of them: ``ChunkStoreContract``) into one ``Test*``
class and gives it a ``leg`` fixture (``KeywordLeg`` or ``VectorLeg`` around
its index), so both legs of a search run the very same tests.

Chunk texts name their version ("a v2 chunk 0"), so ``stored()`` shows a mix
of versions as plainly as a wrong one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import pytest

from search.keyword.base import KeywordIndex
from search.store import Refusal, UpsertResult
from search.types import Chunk, Filters, ScoredChunk, chunk_id, facet_terms
from search.vector.base import VectorIndex

EVERY = "every"  # a token every chunk of a keyword leg carries
LIMIT = 1_000  # more than any test stores


def chunks_of(
    doc_id: str, n: int, version: int, metadata: Mapping[str, Any] | None = None
) -> list[Chunk]:
    """Chunks 0..n-1 of ``doc_id`` at ``version``; texts name both."""
    meta = dict(metadata or {})
    return [
        Chunk(
            id=chunk_id(doc_id, i),
            doc_id=doc_id,
            ordinal=i,
            text=f"{doc_id} v{version} chunk {i}",
            start=0,
            end=10,
            version=version,
            facets=tuple(facet_terms(meta)),
            metadata=meta,
        )
        for i in range(n)
    ]


class Leg(Protocol):
    """One index, seen only through what the contract needs."""

    def write(self, chunks: Sequence[Chunk]) -> UpsertResult: ...
    def everything(self, filters: Filters | None = None) -> list[ScoredChunk]: ...
    def versions(self) -> dict[str, int]: ...
    def count(self) -> int: ...
    def delete(self, doc_ids: Sequence[str]) -> None: ...


class _IndexLeg:
    """What both legs read and delete alike."""

    index: KeywordIndex | VectorIndex

    def versions(self) -> dict[str, int]:
        return self.index.doc_versions()

    def count(self) -> int:
        return self.index.count()

    def delete(self, doc_ids: Sequence[str]) -> None:
        self.index.delete_documents(doc_ids)


class KeywordLeg(_IndexLeg):
    """A ``KeywordIndex`` as a leg: every chunk carries the token ``EVERY``."""

    def __init__(self, index: KeywordIndex) -> None:
        self.index = self.keyword = index

    def write(self, chunks: Sequence[Chunk]) -> UpsertResult:
        return self.keyword.upsert(chunks, [[EVERY, f"t{c.ordinal}"] for c in chunks])

    def everything(self, filters: Filters | None = None) -> list[ScoredChunk]:
        return self.keyword.search([EVERY], LIMIT, filters)


class VectorLeg(_IndexLeg):
    """A ``VectorIndex`` as a leg: a vector per chunk text, found by an exhaustive search."""

    def __init__(self, index: VectorIndex) -> None:
        self.index = self.vector = index

    def write(self, chunks: Sequence[Chunk]) -> UpsertResult:
        return self.vector.upsert(chunks, [self._vector(c.text) for c in chunks])

    def everything(self, filters: Filters | None = None) -> list[ScoredChunk]:
        return self.vector.search([1.0] * self.vector.dim, LIMIT, filters)

    def _vector(self, text: str) -> list[float]:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.vector.dim).tolist()


def stored(leg: Leg, filters: Filters | None = None) -> list[tuple[str, str]]:
    """``(doc_id, text)`` of every stored chunk, sorted."""
    return sorted((hit.doc_id, hit.text) for hit in leg.everything(filters))


def docs(leg: Leg, filters: Filters | None = None) -> set[str]:
    return {hit.doc_id for hit in leg.everything(filters)}


def texts(*chunk_lists: list[Chunk]) -> list[tuple[str, str]]:
    return sorted((c.doc_id, c.text) for chunks in chunk_lists for c in chunks)


class RefusesOlderWrites:
    """A write older than what is stored is refused, reported, and changes nothing."""

    def test_a_late_older_write_changes_nothing_and_is_reported(self, leg: Leg) -> None:
        leg.write(chunks_of("a", 2, version=2))
        before = stored(leg)
        # The late write of version 1 has more chunks: none of them may land,
        # and its pruning must not touch version 2's chunks.
        result = leg.write(chunks_of("a", 4, version=1))
        assert stored(leg) == before == texts(chunks_of("a", 2, version=2))
        assert leg.count() == 2
        assert leg.versions() == {"a": 2}
        assert result == UpsertResult(written=(), refused=(Refusal("a", stored=2, offered=1),))

    def test_a_batch_writes_its_current_documents_and_refuses_superseded_ones(
        self, leg: Leg
    ) -> None:
        leg.write(chunks_of("a", 1, version=3))
        result = leg.write(chunks_of("a", 2, version=2) + chunks_of("b", 2, version=1))
        assert result == UpsertResult(written=("b",), refused=(Refusal("a", 3, 2),))
        assert leg.versions() == {"a": 3, "b": 1}
        assert leg.count() == 3
        # The same version again and a newer one still replace as before.
        assert leg.write(chunks_of("a", 1, version=3)).refused == ()
        assert leg.write(chunks_of("b", 1, version=2)).written == ("b",)
        assert leg.versions() == {"a": 3, "b": 2}
        assert leg.count() == 2

    def test_the_newest_version_survives_late_writes_and_replays(self, leg: Leg) -> None:
        leg.write(chunks_of("a", 2, version=2))
        assert leg.write(chunks_of("a", 4, version=1)).refused == (Refusal("a", 2, 1),)
        assert leg.count() == 2
        assert leg.versions() == {"a": 2}
        assert not [text for _, text in stored(leg) if " v1 " in text]  # no strays
        assert leg.write(chunks_of("a", 2, version=2)).written == ("a",)  # a replay: harmless
        assert leg.write(chunks_of("a", 1, version=3)).written == ("a",)  # newer: replaces
        assert leg.count() == 1 and leg.versions() == {"a": 3}

    def test_a_document_at_two_versions_in_one_write_is_a_caller_error(self, leg: Leg) -> None:
        with pytest.raises(ValueError, match="versions 1 and 2"):
            leg.write(chunks_of("a", 1, version=1) + chunks_of("a", 2, version=2)[1:])
        assert leg.count() == 0


class ReplacesChunksOfNewerVersion:
    """A newer version replaces every stored chunk of its document, whatever their number."""

    def test_fewer_chunks_replace_every_old_chunk(self, leg: Leg) -> None:
        leg.write(chunks_of("a", 3, version=1) + chunks_of("b", 1, version=1))
        result = leg.write(chunks_of("a", 1, version=2))
        assert result == UpsertResult(written=("a",))
        assert stored(leg) == texts(chunks_of("a", 1, version=2), chunks_of("b", 1, version=1))
        assert leg.versions() == {"a": 2, "b": 1}

    def test_more_chunks_replace_them_all(self, leg: Leg) -> None:
        leg.write(chunks_of("a", 2, version=1))
        assert leg.write(chunks_of("a", 5, version=4)).written == ("a",)
        assert stored(leg) == texts(chunks_of("a", 5, version=4))
        assert leg.versions() == {"a": 4}

    def test_each_document_of_a_batch_at_its_own_version(self, leg: Leg) -> None:
        leg.write(chunks_of("a", 2, version=1) + chunks_of("b", 3, version=1))
        result = leg.write(chunks_of("a", 1, version=2) + chunks_of("b", 2, version=5))
        assert result == UpsertResult(written=("a", "b"))
        assert stored(leg) == texts(chunks_of("a", 1, version=2), chunks_of("b", 2, version=5))
        assert leg.versions() == {"a": 2, "b": 5}


class RewritesEqualVersionsIdempotently:
    """The stored version written again is accepted and duplicates nothing."""

    def test_a_replay_changes_nothing(self, leg: Leg) -> None:
        batch = chunks_of("a", 2, version=1) + chunks_of("b", 3, version=1)
        leg.write(batch)
        before = stored(leg)
        result = leg.write(batch)
        assert result == UpsertResult(written=("a", "b"))
        assert stored(leg) == before and leg.count() == 5
        assert leg.versions() == {"a": 1, "b": 1}

    def test_the_same_version_chunked_anew_keeps_only_the_new_chunks(self, leg: Leg) -> None:
        # As after a change of chunk settings: same version, fewer chunks.
        leg.write(chunks_of("a", 3, version=1))
        assert leg.write(chunks_of("a", 2, version=1)).written == ("a",)
        assert stored(leg) == texts(chunks_of("a", 2, version=1))
        assert leg.count() == 2


class DeletesByDocument:
    """A delete removes every chunk of its documents and nothing else."""

    def test_a_delete_removes_only_that_documents_chunks(self, leg: Leg) -> None:
        result = leg.write(chunks_of("a", 3, version=2) + chunks_of("b", 2, version=1))
        assert result.written == ("a", "b")
        leg.delete(["a", "never-indexed"])
        assert stored(leg) == texts(chunks_of("b", 2, version=1))
        assert leg.versions() == {"b": 1}
        leg.delete([])
        assert leg.count() == 2

    def test_a_newer_version_is_written_after_a_delete(self, leg: Leg) -> None:
        leg.write(chunks_of("a", 2, version=1))
        leg.delete(["a"])
        assert leg.write(chunks_of("a", 1, version=2)) == UpsertResult(written=("a",))
        assert stored(leg) == texts(chunks_of("a", 1, version=2))


# Documents and filters every leg must answer alike (a hybrid search filters both legs).
FACETED: dict[str, dict[str, Any]] = {
    "en-a": {"lang": "en", "topic": "a"},
    "en-b": {"lang": "en", "topic": "b", "year": 2024},
    "de-a": {"lang": "de", "topic": "a", "draft": True},
    "fr-c": {"lang": "fr", "topic": ["c", "a"], "year": 2023},
}
FILTER_CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"lang": "en"}, {"en-a", "en-b"}),
    ({"lang": ["de", "fr"]}, {"de-a", "fr-c"}),
    ({"lang": "en", "topic": "a"}, {"en-a"}),
    ({"topic": "a"}, {"en-a", "de-a", "fr-c"}),  # a list value matches any of its items
    ({"topic": ["b", "c"]}, {"en-b", "fr-c"}),
    ({"draft": True}, {"de-a"}),
    ({"draft": False}, set()),
    ({"year": 2024}, {"en-b"}),
    ({"lang": "de", "topic": "b"}, set()),
    ({"lang": "xx"}, set()),
    ({}, set(FACETED)),
]


class FiltersLikeTheOtherLeg:
    """Facet filters select the same documents on every backend of either leg."""

    @pytest.mark.parametrize(("filters", "expected"), FILTER_CASES)
    def test_filters_select_the_same_documents(
        self, leg: Leg, filters: dict[str, Any], expected: set[str]
    ) -> None:
        batch = [c for name, meta in FACETED.items() for c in chunks_of(name, 2, 1, meta)]
        assert leg.write(batch).written == tuple(FACETED)
        assert docs(leg, filters) == expected

    def test_a_refused_write_leaves_the_stored_facets(self, leg: Leg) -> None:
        leg.write(chunks_of("a", 1, version=2, metadata={"lang": "en"}))
        result = leg.write(chunks_of("a", 1, version=1, metadata={"lang": "de"}))
        assert result.refused == (Refusal("a", 2, 1),)
        assert docs(leg, {"lang": "de"}) == set()
        assert docs(leg, {"lang": "en"}) == {"a"}


class ChunkStoreContract(
    RefusesOlderWrites,
    ReplacesChunksOfNewerVersion,
    RewritesEqualVersionsIdempotently,
    DeletesByDocument,
    FiltersLikeTheOtherLeg,
):
    """Every behaviour above: what a test module's ``Test*`` class inherits."""
