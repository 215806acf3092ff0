"""One contract for every ``KeywordIndex``: tantivy always, Elasticsearch when
``SIEVE_TEST_ES_URL`` points at a server (optionally with
``SIEVE_TEST_ES_API_KEY`` or ``SIEVE_TEST_ES_USERNAME``/``SIEVE_TEST_ES_PASSWORD``).

Tokens are written by hand: the contract is about indexing and scoring the
analyser's output, not about the analyser.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from support.chunk_store_contract import ChunkStoreContract, KeywordLeg, chunks_of
from support.servers import es_test_settings

from search.errors import BackendUnavailable
from search.keyword import KeywordIndex
from search.keyword.tantivy_index import TantivyKeywordIndex
from search.text import analyze
from search.types import Chunk, ScoredChunk, chunk_id, facet_terms

pytestmark = pytest.mark.integration

ES_URL = os.environ.get("SIEVE_TEST_ES_URL", "")


def _es_index() -> Iterator[KeywordIndex]:
    from elasticsearch import Elasticsearch

    from search.keyword.elasticsearch_index import ElasticsearchKeywordIndex, template_name

    # A prefix of its own per test: its own template and index, dropped after.
    prefix = f"sieve-test-{uuid.uuid4().hex[:12]}"
    settings = es_test_settings(prefix)
    index = ElasticsearchKeywordIndex(settings, "contract")
    try:
        yield index
    finally:
        index.close()
        auth: dict[str, Any] = {}
        if settings.es_api_key:
            auth["api_key"] = settings.es_api_key
        elif settings.es_username:
            auth["basic_auth"] = (settings.es_username, settings.es_password)
        with Elasticsearch(ES_URL, **auth) as admin:
            admin.indices.delete(index=index.index_name, ignore_unavailable=True)
            admin.options(ignore_status=404).indices.delete_index_template(
                name=template_name(prefix)
            )


@pytest.fixture(params=["tantivy", "elasticsearch"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeywordIndex]:
    if request.param == "tantivy":
        tantivy_index = TantivyKeywordIndex(tmp_path / "tantivy")
        yield tantivy_index
        tantivy_index.close()
        return
    if not ES_URL:
        pytest.skip("SIEVE_TEST_ES_URL is not set: no Elasticsearch to run the contract against")
    yield from _es_index()


@pytest.fixture
def leg(index: KeywordIndex) -> KeywordLeg:
    return KeywordLeg(index)


class TestVersionedChunkStore(ChunkStoreContract):
    """The chunk-store contract (``support.chunk_store_contract``) on this leg."""


def chunk(
    doc_id: str,
    ordinal: int = 0,
    *,
    version: int = 1,
    metadata: Mapping[str, Any] | None = None,
    title: str = "",
) -> Chunk:
    meta = dict(metadata or {})
    return Chunk(
        id=chunk_id(doc_id, ordinal),
        doc_id=doc_id,
        ordinal=ordinal,
        text=f"text of {doc_id} #{ordinal}",
        start=ordinal * 100,
        end=ordinal * 100 + 42,
        title=title,
        version=version,
        facets=tuple(facet_terms(meta)),
        metadata=meta,
    )


def put(index: KeywordIndex, *items: tuple[Chunk, Sequence[str]]) -> None:
    index.upsert([c for c, _ in items], [list(t) for _, t in items])


def ids(hits: Sequence[ScoredChunk]) -> list[str]:
    return [hit.doc_id for hit in hits]


def test_upsert_then_search_finds_by_token(index: KeywordIndex) -> None:
    meta = {"lang": "en", "tags": ["x", "y"], "nested": {"k": [1, 2]}, "note": "café ☕"}
    put(
        index,
        (chunk("a", metadata=meta, title="Apple pie"), ["appl", "pie"]),
        (chunk("b"), ["banana", "bread"]),
    )
    hits = index.search(["appl"], 10)
    assert ids(hits) == ["a"]
    hit = hits[0]
    assert hit.chunk_id == chunk_id("a", 0)
    assert (hit.text, hit.title, hit.start, hit.end, hit.ordinal) == (
        "text of a #0",
        "Apple pie",
        0,
        42,
        0,
    )
    assert dict(hit.metadata) == meta
    assert index.search(["cherri"], 10) == []


def test_tokens_are_indexed_verbatim(index: KeywordIndex) -> None:
    # No lowercasing, stemming or length limit on top of the analyser's.
    long_token = "x" * 60
    put(index, (chunk("a"), ["Appl", long_token, "running"]))
    assert ids(index.search(["Appl"], 10)) == ["a"]
    assert index.search(["appl"], 10) == []
    assert ids(index.search([long_token], 10)) == ["a"]
    assert index.search(["run"], 10) == []


def test_chinese_analysed_text_matches_on_content_words_only(index: KeywordIndex) -> None:
    # Both engines index the analyser's Chinese terms whole and score the same
    # terms: a query shares only function words (中, 的, 要, 什麼) with "noise".
    texts = {
        "dl": "深度學習的Transformer架構",
        "noise": "我想要知道中午要來的是什麼",
        "tea": "茶",
    }
    put(index, *((chunk(doc_id), analyze(text)) for doc_id, text in texts.items()))
    query = analyze("我想要学习深度学习中的Transformer架构")
    assert ids(index.search(query, 10)) == ["dl"]
    assert ids(index.search(analyze("茶"), 10)) == ["tea"]  # a one-character word
    assert analyze("中的什麼") == []  # nothing left to search for


def test_bm25_ordering(index: KeywordIndex) -> None:
    put(
        index,
        (chunk("twice"), ["appl", "appl", "filler", "other"]),
        (chunk("once"), ["appl", "filler", "other", "more"]),
        (chunk("common"), ["common", "filler", "other", "more"]),
        (chunk("rare"), ["rare", "filler", "other", "more"]),
        (chunk("c2"), ["common", "x1", "x2", "x3"]),
        (chunk("c3"), ["common", "x4", "x5", "x6"]),
    )
    assert ids(index.search(["appl"], 10)) == ["twice", "once"]
    # Same length and one match each: the rarer term wins on idf.
    assert ids(index.search(["common", "rare"], 10))[0] == "rare"


def test_scores_are_plain_floats_best_first(index: KeywordIndex) -> None:
    put(index, *[(chunk(f"d{i}"), ["appl"] * (i + 1) + ["filler"] * 3) for i in range(5)])
    hits = index.search(["appl", "filler"], 10)
    assert len(hits) == 5
    assert all(type(hit.score) is float and hit.score > 0 for hit in hits)
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert len(index.search(["appl"], 2)) == 2


def test_score_is_lucene_bm25(index: KeywordIndex) -> None:
    # Both engines must return Lucene's BM25 (no (k1 + 1) factor) so that
    # switching backends keeps scores. Short fields keep the norms exact.
    put(
        index,
        (chunk("a"), ["appl", "appl", "pie"]),
        (chunk("b"), ["appl", "tart", "x", "y", "z"]),
        (chunk("c"), ["banana"]),
    )
    n_docs, doc_freq, tf, dl, avgdl, k1, b = 3, 2, 2, 3, 9 / 3, 1.2, 0.75
    idf = math.log(1 + (n_docs - doc_freq + 0.5) / (doc_freq + 0.5))
    expected = idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))
    hits = index.search(["appl"], 10)
    assert hits[0].doc_id == "a"
    assert hits[0].score == pytest.approx(expected, rel=1e-4)


def test_repeated_query_token_counts_per_occurrence(index: KeywordIndex) -> None:
    # Elasticsearch's match query sums a repeated term's clauses.
    put(index, (chunk("a"), ["appl", "pie"]), (chunk("b"), ["pie", "tart"]))
    once = index.search(["appl", "pie"], 10)
    twice = index.search(["appl", "appl", "pie"], 10)
    assert ids(once) == ids(twice) == ["a", "b"]
    appl_once = once[0].score - once[1].score  # b scores "pie" exactly like a
    assert twice[0].score == pytest.approx(once[0].score + appl_once, rel=1e-4)


def test_upsert_replaces_all_old_chunks(index: KeywordIndex) -> None:
    put(
        index,
        (chunk("a", 0), ["one"]),
        (chunk("a", 1), ["two"]),
        (chunk("a", 2), ["three"]),
        (chunk("b", 0), ["one"]),
    )
    assert index.count() == 4
    put(index, (chunk("a", 0, version=2), ["uno"]))
    assert index.count() == 2
    assert index.search(["two"], 10) == [] and index.search(["three"], 10) == []
    assert ids(index.search(["one"], 10)) == ["b"]
    assert ids(index.search(["uno"], 10)) == ["a"]
    assert index.doc_versions() == {"a": 2, "b": 1}


def test_replaying_an_upsert_is_idempotent(index: KeywordIndex) -> None:
    batch = [(chunk("a", 0), ["appl"]), (chunk("a", 1), ["appl", "pie"]), (chunk("b"), ["pie"])]
    put(index, *batch)
    first = index.search(["appl", "pie"], 10)
    put(index, *batch)
    assert index.count() == 3
    again = index.search(["appl", "pie"], 10)
    assert [h.chunk_id for h in again] == [h.chunk_id for h in first]


def test_delete_documents_removes_only_their_chunks(index: KeywordIndex) -> None:
    put(index, (chunk("a", 0), ["appl"]), (chunk("a", 1), ["appl"]), (chunk("b"), ["appl"]))
    index.delete_documents(["a"])
    assert index.count() == 1
    assert ids(index.search(["appl"], 10)) == ["b"]
    assert index.doc_versions() == {"b": 1}


def test_deleting_unknown_ids_or_nothing_changes_nothing(index: KeywordIndex) -> None:
    put(index, (chunk("a"), ["appl"]), (chunk("b"), ["appl"]))
    index.delete_documents(["nope", "neither"])
    index.delete_documents([])
    assert index.count() == 2
    assert sorted(ids(index.search(["appl"], 10))) == ["a", "b"]


@pytest.fixture
def faceted(index: KeywordIndex) -> KeywordIndex:
    put(
        index,
        (chunk("en-a", metadata={"lang": "en", "topic": "a"}), ["appl"]),
        (chunk("en-b", metadata={"lang": "en", "topic": "b"}), ["appl"]),
        (chunk("de-a", metadata={"lang": "de", "topic": "a"}), ["appl"]),
        (chunk("de-c", metadata={"lang": "de", "topic": "c", "draft": True}), ["appl"]),
    )
    return index


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"lang": "en"}, ["en-a", "en-b"]),
        ({"topic": ["a", "c"]}, ["de-a", "de-c", "en-a"]),
        ({"lang": "de", "topic": "a"}, ["de-a"]),
        ({"lang": "de", "topic": ["a", "b"]}, ["de-a"]),
        ({"draft": True}, ["de-c"]),
        ({"lang": "fr"}, []),
        ({"lang": "en", "topic": "c"}, []),
    ],
)
def test_filters(faceted: KeywordIndex, filters: dict[str, Any], expected: list[str]) -> None:
    assert sorted(ids(faceted.search(["appl"], 10, filters))) == expected


def test_filter_is_applied_inside_the_search(index: KeywordIndex) -> None:
    put(
        index,
        *[(chunk(f"high{i}", metadata={"lang": "en"}), ["appl"] * 3) for i in range(5)],
        (chunk("low", metadata={"lang": "de"}), ["appl", "x", "y"]),
    )
    hits = index.search(["appl"], 1, {"lang": "de"})
    assert ids(hits) == ["low"]
    # A filter does not score: the hit has its plain BM25 score.
    unfiltered = {h.doc_id: h.score for h in index.search(["appl"], 10)}
    assert hits[0].score == pytest.approx(unfiltered["low"], rel=1e-5)


def test_empty_tokens_return_nothing(index: KeywordIndex) -> None:
    put(index, (chunk("a"), ["appl"]))
    assert index.search([], 10) == []
    assert index.search([], 10, {"lang": "en"}) == []


def test_count_doc_versions_and_clear(index: KeywordIndex) -> None:
    assert index.count() == 0
    assert index.doc_versions() == {}
    put(
        index,
        (chunk("a", 0, version=3), ["appl"]),
        (chunk("a", 1, version=3), ["pie"]),
        (chunk("b", 0, version=1), ["tart"]),
    )
    assert index.count() == 3
    assert index.doc_versions() == {"a": 3, "b": 1}
    index.clear()
    assert index.count() == 0
    assert index.doc_versions() == {}
    assert index.search(["appl"], 10) == []
    put(index, (chunk("c"), ["appl"]))
    assert ids(index.search(["appl"], 10)) == ["c"]


def test_upsert_rejects_mismatched_tokens(index: KeywordIndex) -> None:
    with pytest.raises(ValueError):
        index.upsert([chunk("a"), chunk("b")], [["appl"]])


# -- Elasticsearch only ----------------------------------------------------------


@pytest.fixture
def es_index() -> Iterator[KeywordIndex]:
    if not ES_URL:
        pytest.skip("SIEVE_TEST_ES_URL is not set: no Elasticsearch to test against")
    yield from _es_index()


def test_elasticsearch_rebuild_after_clear_and_rewrite_after_delete(
    es_index: KeywordIndex,
) -> None:
    es_index.upsert(chunks_of("a", 2, version=1) + chunks_of("b", 1, version=1), [["x"]] * 3)
    es_index.clear()  # drops the index, so the same versions can be written again
    es_index.upsert(chunks_of("a", 2, version=1), [["x"]] * 2)
    assert es_index.count() == 2
    es_index.delete_documents(["a"])
    # A deleted chunk's version is remembered for index.gc_deletes: refused, and said so.
    with pytest.raises(BackendUnavailable, match="gc_deletes"):
        es_index.upsert(chunks_of("a", 1, version=1), [["x"]])


# -- tantivy only --------------------------------------------------------------


def test_tantivy_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "collections" / "c" / "tantivy"
    first = TantivyKeywordIndex(path)
    assert not path.exists()  # construction opens nothing
    put(first, (chunk("a", metadata={"lang": "en"}), ["appl"]), (chunk("b"), ["pie"]))
    first.close()
    second = TantivyKeywordIndex(path)
    try:
        assert second.count() == 2
        assert ids(second.search(["appl"], 10, {"lang": "en"})) == ["a"]
        put(second, (chunk("c"), ["appl"]))
        assert second.count() == 3
    finally:
        second.close()


def test_tantivy_second_writer_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "tantivy"
    writer = TantivyKeywordIndex(path)
    reader = TantivyKeywordIndex(path)
    try:
        put(writer, (chunk("a"), ["appl"]))
        # Searching never takes the writer lock.
        assert ids(reader.search(["appl"], 10)) == ["a"]
        with pytest.raises(BackendUnavailable) as caught:
            put(reader, (chunk("b"), ["pie"]))
        assert caught.value.backend == "tantivy"
        assert "another" in str(caught.value)
    finally:
        reader.close()
        writer.close()
    # Once the writer is gone, the other object may write.
    again = TantivyKeywordIndex(path)
    try:
        put(again, (chunk("b"), ["pie"]))
        assert again.count() == 2
    finally:
        again.close()


def test_iter_chunks_returns_every_chunk_as_written(index: KeywordIndex) -> None:
    assert list(index.iter_chunks()) == []
    meta = {"lang": "en", "tags": ["x", "y"], "nested": {"k": [1, 2]}}
    written = [
        chunk("a", 0, version=2, metadata=meta, title="Äpfel"),
        chunk("a", 1, version=2, metadata=meta, title="Äpfel"),
        chunk("b", 0),
    ]
    put(index, *((c, ["tok"]) for c in written))
    assert sorted(index.iter_chunks(), key=lambda c: c.id) == sorted(written, key=lambda c: c.id)


def test_meta_round_trip_where_the_backend_keeps_it(index: KeywordIndex) -> None:
    from search.integrity import MetaStore

    if not isinstance(index, MetaStore):
        pytest.skip("an embedded index keeps no metadata: search.integrity uses a file")
    assert index.get_meta("sieve_test") is None
    index.set_meta("sieve_test", "one")
    index.set_meta("sieve_other", "two")
    assert (index.get_meta("sieve_test"), index.get_meta("sieve_other")) == ("one", "two")


def test_candidates_are_the_search_hits_with_passages_on_demand(index: KeywordIndex) -> None:
    put(
        index,
        (chunk("a", metadata={"lang": "en"}, title="Apple pie"), ["appl", "pie", "appl"]),
        (chunk("b", 1), ["appl", "bread"]),
        (chunk("c"), ["cherri"]),
    )
    full = index.search(["appl", "pie"], 10)
    found = index.candidates(["appl", "pie"], 10)
    # Ids and scores only, in the search's order...
    assert [(h.chunk_id, h.doc_id, h.score) for h in found.hits] == [
        (h.chunk_id, h.doc_id, h.score) for h in full
    ]
    assert all(h.text == "" and h.title == "" and not h.metadata for h in found.hits)
    # ...and the full hits of exactly the ids asked for; an unknown id is left out.
    wanted = [full[1].chunk_id, "no-such-chunk"]
    assert found.hydrate(wanted) == {full[1].chunk_id: full[1]}
    assert found.hydrate([h.chunk_id for h in full]) == {h.chunk_id: h for h in full}
    empty = index.candidates([], 10)
    assert empty.hits == [] and empty.hydrate(["x"]) == {}


def test_passages_are_the_stored_chunks_by_id(index: KeywordIndex) -> None:
    put(
        index,
        (chunk("a", metadata={"lang": "en"}, title="Apple pie"), ["appl", "pie"]),
        (chunk("b", 1), ["appl", "bread"]),
    )
    full = {h.chunk_id: h for h in index.search(["appl"], 10)}
    wanted = [*full, "no-such-chunk", next(iter(full))]  # an unknown id and a repeat
    got = index.passages(wanted)
    assert set(got) == set(full)
    for cid, hit in full.items():
        # The same passage, title and offsets a search hit carries; no score.
        assert got[cid] == replace(hit, score=0.0)
    assert index.passages([]) == {}


def test_chunk_versions_are_one_documents_stored_chunk_ids(index: KeywordIndex) -> None:
    a0, a1 = chunk("a", 0, version=2), chunk("a", 1, version=2)
    put(index, (a0, ["appl"]), (a1, ["pie"]), (chunk("b", 0), ["tart"]))
    assert index.chunk_versions("a") == {a0.id: 2, a1.id: 2}
    assert index.chunk_versions("nope") == {}
    index.delete_documents(["a"])
    assert index.chunk_versions("a") == {}
    assert len(index.chunk_versions("b")) == 1
