"""POST /v1/search, /v1/context and /v1/rerank over the indexed sample corpus."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import pytest
from api_testkit import error_code

from search.text.snippet import snippet

pytestmark = pytest.mark.integration

QUERY = "how to stop a nosebleed"


def search(client, **body):
    return client.post("/v1/search", json={"query": QUERY, **body})


def test_search_answers_hits_with_provenance_snippets_and_timings(client):
    response = search(client, top_k=5)
    assert response.status_code == 200, response.json
    body = response.json
    assert body["query"] == QUERY and body["mode"] == "hybrid" and body["page"] == 1
    assert body["reranked"] is True and body["rerank_window"] == body["total_window"] > 5
    assert body["rerank_blend"] is None  # SIEVE_RERANK_BLEND_WEIGHT is 0: the pure order
    assert {"bm25", "vector", "fusion", "rerank", "total"} <= set(body["timings_ms"])
    assert body["next_cursor"] and body["degraded"] == []
    hits = body["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    for hit in hits:
        assert {"doc_id", "title", "text", "snippet", "chunk_id", "offsets", "metadata"} <= set(hit)
        assert hit["rerank"]["score"] == pytest.approx(1 / (1 + math.exp(-hit["rerank"]["logit"])))
        assert hit["score"] == hit["rerank"]["score"]
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    # BM25 hits hold a query term by definition, so each snippet marks one.
    bm25 = search(client, mode="bm25", rerank=False, top_k=3).json["hits"]
    assert bm25 and all("<mark>" in h["snippet"] for h in bm25)
    assert "<mark>nosebleed" in bm25[0]["snippet"].lower()


def test_bm25_mode_with_filters_without_rerank(client):
    body = search(client, mode="bm25", filters={"lang": "en"}, rerank=False, top_k=10).json
    assert body["reranked"] is False and body["fusion"] is None
    assert body["hits"] and all(h["metadata"]["lang"] == "en" for h in body["hits"])
    assert all(h["vector"] is None and h["rerank"] is None for h in body["hits"])


def test_snippet_escapes_html_and_marks_analysed_terms():
    text = "Intro <script>alert(1)</script> & more. Nosebleeds stop when you pinch " + "x " * 300
    out = snippet(text, "stopping a nosebleed")
    assert "<script>" not in out and "&lt;script&gt;" in out and "&amp;" in out
    assert "<mark>Nosebleeds</mark>" in out and "<mark>stop</mark>" in out
    assert out.endswith("…") and len(out) < 400
    assert "<mark>" not in snippet("the and of", "the")  # stopwords never match
    # Chinese: Simplified query terms mark Traditional text.
    assert (
        snippet("颱風來之前要準備什麼？", "台风 准备")
        == "<mark>颱風</mark>來之前要<mark>準備</mark>什麼？"
    )


@pytest.mark.parametrize("body", [{"query": "the and of", "mode": "bm25"}, {"query": "的"}])
def test_a_query_without_bm25_terms_and_no_vector_leg_answers_no_hits(client, body):
    response = client.post("/v1/search", json=body)
    assert response.status_code == 200 and response.json["hits"] == []
    assert "bm25" in response.json["skipped"]


def test_unknown_collection_is_404(client):
    response = search(client, collection="no-such-collection")
    assert response.status_code == 404 and error_code(response) == "not_found"


@pytest.mark.parametrize(
    "body",
    [
        {"query": QUERY, "top_k": "5"},
        {"query": QUERY, "top_k": 5.0},
        {"query": QUERY, "top_k": True},
        {"query": QUERY, "rerank": "yes"},
        {"query": QUERY, "bogus": 1},
        {"query": QUERY, "top_k": 101},
        {"query": QUERY, "top_k": 10**12},
        {"query": QUERY, "top_k": 0},
        {"query": "x" * 2049},
        {"query": ""},
        {"query": "   "},
        {"query": QUERY, "page": 0},
        {"query": QUERY, "page": 2, "cursor": "abc"},
        {"query": QUERY, "mode": "fuzzy"},
        {"query": QUERY, "fusion": "borda"},
        {"query": QUERY, "collection": "Bad Name!"},
        {"query": QUERY, "filters": {"lang": {"nested": 1}}},
        {"query": QUERY, "weights": [1.0]},
        {"query": QUERY, "rerank_depth": 501},
        {"top_k": 5},
        [QUERY],
    ],
)
def test_invalid_requests_are_422_with_the_error_shape(client, body):
    response = client.post("/v1/search", json=body)
    assert response.status_code == 422, response.json
    assert error_code(response) == "invalid_request"


def test_malformed_json_is_400_and_other_content_types_415(client):
    response = client.post("/v1/search", data='{"query": ', content_type="application/json")
    assert response.status_code == 400 and error_code(response) == "invalid_request"
    response = client.post("/v1/search", data=f"query={QUERY}")
    assert response.status_code == 415 and error_code(response) == "invalid_request"


def test_oversized_body_is_413(make_app):
    client = make_app(max_body_bytes=1000).test_client()
    response = client.post("/v1/search", json={"query": QUERY, "filters": {"k": "v" * 2000}})
    assert response.status_code == 413 and error_code(response) == "payload_too_large"


def test_pages_are_slices_of_one_window(client):
    for rerank in (True, False):
        first = search(client, top_k=5, rerank=rerank).json
        second = search(client, top_k=5, rerank=rerank, cursor=first["next_cursor"]).json
        by_page = search(client, top_k=5, rerank=rerank, page=2).json
        both = search(client, top_k=10, rerank=rerank).json
        ids = [h["doc_id"] for h in first["hits"] + second["hits"]]
        assert len(set(ids)) == 10, "pages must not overlap"
        assert ids == [h["doc_id"] for h in both["hits"]]
        assert [h["doc_id"] for h in by_page["hits"]] == ids[5:]
        assert [h["rank"] for h in second["hits"]] == [6, 7, 8, 9, 10]
        assert second["page"] == 2 and first["total_window"] == second["total_window"]


def test_cursor_walk_reaches_the_end_of_the_rerank_window(client):
    whole = search(client, top_k=40, rerank_depth=40).json
    seen, cursor, pages = [], None, 0
    while True:
        body = search(client, top_k=10, rerank_depth=40, cursor=cursor).json
        seen += [h["doc_id"] for h in body["hits"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 4 and seen == [h["doc_id"] for h in whole["hits"]]


@pytest.mark.parametrize(
    "body",
    [
        {"top_k": 20, "page": 3},  # 60 > the rerank depth of 50
        {"top_k": 10, "page": 2, "rerank_depth": 10},
        {"top_k": 100, "page": 11, "rerank": False},  # 1100 > 1000
    ],
)
def test_a_page_beyond_the_window_is_422(client, body):
    response = search(client, **body)
    assert response.status_code == 422 and error_code(response) == "invalid_request"
    assert "window" in response.json["error"]["message"]


def _forge(cursor: str, **changes) -> str:
    payload, _, signature = cursor.partition(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    raw = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{raw}.{signature}"


def test_forged_and_foreign_cursors_are_400(client):
    cursor = search(client, top_k=5).json["next_cursor"]
    for bad in (_forge(cursor, window=1000, offset=900), "garbage", cursor + "x", "a.b.c"):
        response = search(client, top_k=5, cursor=bad)
        assert response.status_code == 400 and error_code(response) == "invalid_request", bad
    other = client.post("/v1/search", json={"query": "cast iron", "top_k": 5, "cursor": cursor})
    assert other.status_code == 400 and "another query" in other.json["error"]["message"]
    changed = search(client, top_k=5, mode="bm25", cursor=cursor)
    assert changed.status_code == 400 and "mode" in changed.json["error"]["message"]


def test_context_packs_cited_sources_within_the_budget(client):
    response = client.post("/v1/context", json={"query": QUERY, "max_tokens": 300, "top_k": 10})
    assert response.status_code == 200, response.json
    body = response.json
    assert 0 < body["used_tokens"] <= 300 and body["format"] == "markdown"
    assert body["documents"] and body["documents"][0]["citation"] == 1
    assert body["text"].startswith("Sources") and body["degraded"] == []
    assert "pack" in body["timings_ms"]
    text = client.post("/v1/context", json={"query": QUERY, "format": "text"}).json
    assert text["format"] == "text" and text["max_tokens"] == 1500
    assert body["abstained"] is False and body["abstain_reason"] is None


@pytest.mark.parametrize("path", ["/v1/search", "/v1/context"])
def test_min_relevance_without_a_calibration_says_how_to_make_one(client, path):
    response = client.post(path, json={"query": QUERY, "min_relevance": 0.5})
    assert response.status_code == 422 and error_code(response) == "invalid_request"
    message = response.json["error"]["message"]
    assert "no calibration exists" in message and "sieve calibrate" in message
    hits = search(client, top_k=3).json["hits"]
    assert all(h["rerank"]["relevance"] is None for h in hits)  # no calibration: no relevance


@pytest.mark.parametrize(
    "body",
    [
        {"query": QUERY, "max_tokens": 10},
        {"query": QUERY, "format": "html"},
        {"query": QUERY, "top_k": "20"},
        {"query": QUERY, "extra": True},
        {"query": QUERY, "min_relevance": 1.5},
        {"query": QUERY, "min_relevance": "0.5"},
    ],
)
def test_context_rejects_bad_input(client, body):
    response = client.post("/v1/context", json=body)
    assert response.status_code == 422 and error_code(response) == "invalid_request"


def test_context_of_an_unknown_collection_is_404(client):
    response = client.post("/v1/context", json={"query": QUERY, "collection": "nope"})
    assert response.status_code == 404


def test_rerank_scores_strings_and_objects_sorted_by_sigmoid(client, engine):
    docs = [f"passage {i} about {'nosebleeds' if i % 7 == 0 else 'gardens'}" for i in range(40)]
    mixed = [d if i % 2 else {"text": d} for i, d in enumerate(docs)]
    response = client.post(
        "/v1/rerank", json={"query": QUERY, "documents": mixed, "return_documents": True}
    )
    assert response.status_code == 200, response.json
    body = response.json
    # The model's name, not the folder it was loaded from.
    assert body["model"] == Path(engine.reranker.model_key.rsplit("@", 1)[0]).name and body["id"]
    assert "/" not in body["model"]
    assert body["meta"] == {"billed_units": {"search_units": 1}}
    assert body["usage"]["total_tokens"] >= 0  # cached scores cost no tokens
    # The reranker's stages, in the body and in the Server-Timing header with the total.
    assert {"cache", "model"} & set(body["timings_ms"])
    timing = dict(part.split(";dur=") for part in response.headers["Server-Timing"].split(", "))
    assert set(body["timings_ms"]) | {"total"} == set(timing)
    assert float(timing["total"]) >= max(body["timings_ms"].values())
    results = body["results"]
    assert sorted(r["index"] for r in results) == list(range(40))  # more than 32 accepted
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    direct = engine.reranker.rerank(QUERY, docs).scores
    for result in results:
        assert result["relevance_score"] == pytest.approx(direct[result["index"]].score)
        assert result["document"] == {"text": docs[result["index"]]}


@pytest.mark.parametrize("path", ["/rerank", "/v2/rerank", "/v1/rerank"])
def test_rerank_aliases_top_n_and_model_echo(client, path):
    body = {"query": QUERY, "documents": ["a nosebleed", "a garden", "a bike"], "top_n": 2}
    response = client.post(path, json={**body, "model": "my-model"})
    assert response.status_code == 200, response.json
    assert response.json["model"] == "my-model"
    assert len(response.json["results"]) == 2
    assert all("document" not in r for r in response.json["results"])


def test_rerank_limits(client, make_app):
    limited = make_app(max_rerank_docs=5).test_client()
    response = limited.post("/v1/rerank", json={"query": QUERY, "documents": ["x"] * 6})
    assert response.status_code == 413 and error_code(response) == "payload_too_large"
    assert (
        limited.post("/v1/rerank", json={"query": QUERY, "documents": ["x"] * 5}).status_code == 200
    )
    for bad in ({"query": QUERY, "documents": []}, {"query": QUERY, "documents": [{"t": "x"}]}):
        assert client.post("/v1/rerank", json=bad).status_code == 422


def test_rerank_object_documents_rank_their_rank_fields(client, engine):
    docs = [
        {"title": "Nosebleeds", "text": "Lean forward and pinch the nose.", "id": 7},
        {"title": "Gardens", "text": "Water the roses in the morning."},
    ]
    body = {
        "query": QUERY,
        "documents": docs,
        "rank_fields": ["title", "text"],
        "return_documents": True,
    }
    response = client.post("/v1/rerank", json=body)
    assert response.status_code == 200, response.json
    joined = [f"title: {d['title']}\ntext: {d['text']}" for d in docs]
    direct = engine.reranker.rerank(QUERY, joined).scores
    for result in response.json["results"]:
        assert result["relevance_score"] == pytest.approx(direct[result["index"]].score)
        assert result["document"] == docs[result["index"]]  # as sent, extra fields too
    # Without rank_fields an object is ranked by its text alone, as a string would be.
    plain = client.post("/v1/rerank", json={"query": QUERY, "documents": docs}).json["results"]
    strings = client.post(
        "/v1/rerank", json={"query": QUERY, "documents": [d["text"] for d in docs]}
    ).json["results"]
    assert plain == strings


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"documents": [{"title": "t"}]}, "documents.0: no field 'text'"),
        (
            {"documents": ["a", {"text": "x"}], "rank_fields": ["title"]},
            "documents.1: no field 'title'",
        ),
        ({"documents": [{"text": ["x"]}]}, "documents.0.text: a rank field must be"),
        ({"documents": ["a"], "relevant_spans": True}, "relevant_spans: not supported"),
        ({"documents": ["a"], "relevant_spans": {"mode": "enabled"}}, "relevant_spans: not"),
        ({"documents": ["a"], "max_tokens_per_doc": 5000}, "max_tokens_per_doc:"),
    ],
)
def test_rerank_bad_documents_and_options_are_one_line_422s(client, body, message):
    response = client.post("/v1/rerank", json={"query": QUERY, **body})
    assert response.status_code == 422 and error_code(response) == "invalid_request"
    text = response.json["error"]["message"]
    assert text.startswith(message) and "\n" not in text


@pytest.mark.parametrize("spans", [False, None, {"mode": "disabled"}])
def test_rerank_relevant_spans_that_ask_for_none_are_accepted(client, spans):
    body = {"query": QUERY, "documents": ["a"], "relevant_spans": spans}
    assert client.post("/v1/rerank", json=body).status_code == 200


def test_rerank_max_tokens_per_doc_scores_only_the_head(client, engine):
    head = "Pinch the soft part of the nose and lean forward."
    long_doc = head + " " + "Gardens need water and sunlight every day. " * 60
    body = {"query": QUERY, "documents": [long_doc]}
    whole = client.post("/v1/rerank", json=body).json["results"][0]["relevance_score"]
    cut = client.post("/v1/rerank", json={**body, "max_tokens_per_doc": 12}).json
    short = engine.reranker.rerank(QUERY, [head], max_doc_tokens=12).scores[0].score
    assert cut["results"][0]["relevance_score"] == pytest.approx(short)
    assert cut["results"][0]["relevance_score"] != pytest.approx(whole)


def test_rerank_tei_shape_at_rerank(client, engine):
    texts = ["a garden", "pinch the nose and lean forward", "a bike"]
    response = client.post("/rerank", json={"query": QUERY, "texts": texts, "truncate": True})
    assert response.status_code == 200, response.json
    answer = response.json
    assert [sorted(r) for r in answer] == [["index", "score"]] * 3
    assert "total;dur=" in response.headers["Server-Timing"]  # a bare list has no room
    direct = engine.reranker.rerank(QUERY, texts).scores
    assert [r["score"] for r in answer] == sorted((d.score for d in direct), reverse=True)
    raw = client.post(
        "/rerank", json={"query": QUERY, "texts": texts, "raw_scores": True, "return_text": True}
    ).json
    for r in raw:
        assert r["score"] == pytest.approx(direct[r["index"]].logit)
        assert r["text"] == texts[r["index"]]
    left = client.post(
        "/rerank", json={"query": QUERY, "texts": texts, "truncation_direction": "left"}
    )
    assert left.status_code == 422
    assert left.json["error"]["message"].startswith("truncation_direction:")
    # TEI's shape is /rerank's only; the versioned paths are Cohere's.
    assert client.post("/v1/rerank", json={"query": QUERY, "texts": texts}).status_code == 422
