"""Collections, documents, uploads and tasks, each test in its own collection."""

from __future__ import annotations

import io
import json

import pytest
from api_testkit import error_code, wait_task
from support.pdf import tiny_pdf

pytestmark = pytest.mark.integration

DOCS = [
    {"id": "kettle", "title": "Descaling", "text": "Vinegar removes limescale from a kettle."},
    {"id": "tyre", "text": "Pump a bicycle tyre to the pressure printed on its side."},
    {
        "id": "fern",
        "text": "<p>Ferns like <b>shade</b> and damp soil.</p>",
        "content_type": "html",
        "metadata": {"topic": "garden"},
    },
]


def add(client, collection, documents):
    response = client.post(f"/v1/collections/{collection}/documents", json={"documents": documents})
    assert response.status_code == 202, response.json
    assert response.headers["Location"] == f"/v1/tasks/{response.json['task_id']}"
    return wait_task(client, response.json["task_id"])


def stats(client, collection):
    response = client.get(f"/v1/collections/{collection}/stats")
    assert response.status_code == 200, response.json
    return response.json


def test_collection_lifecycle(client):
    name = "life-cycle-1"
    assert client.post("/v1/collections", json={"name": name}).json == {"name": name}
    again = client.post("/v1/collections", json={"name": name})
    assert again.status_code == 409 and error_code(again) == "conflict"
    listed = {c["name"]: c for c in client.get("/v1/collections").json["collections"]}
    assert listed[name] == {"name": name, "documents": 0, "chunks": 0}
    assert listed["default"]["documents"] > 40
    add(client, name, DOCS[:1])
    dropped = client.delete(f"/v1/collections/{name}")
    assert dropped.status_code == 200 and dropped.json == {"deleted": name, "documents": 1}
    assert client.get(f"/v1/collections/{name}/stats").status_code == 404
    assert client.delete(f"/v1/collections/{name}").status_code == 404
    search = client.post("/v1/search", json={"query": "kettle", "collection": name})
    assert search.status_code == 404


@pytest.mark.parametrize("body", [{"name": "Bad!"}, {"name": ""}, {"name": 5}, {}, {"n": "x"}])
def test_invalid_collection_bodies_are_422(client, body):
    response = client.post("/v1/collections", json=body)
    assert response.status_code == 422 and error_code(response) == "invalid_request"


def test_documents_are_indexed_by_a_task_and_searchable(client, collection):
    task = add(client, collection, DOCS)
    assert task["state"] == "done" and task["collection"] == collection
    assert (task["total"], task["processed"], task["indexed"]) == (3, 3, 3)
    assert task["failed"] == {} and task["errors"] == [] and task["finished_at"]
    doc = client.get(f"/v1/collections/{collection}/documents/fern").json
    assert doc["status"] == "indexed" and doc["chunks"] == 1 and doc["version"] == 1
    assert doc["metadata"] == {"topic": "garden"} and doc["content_type"] == "html"
    found = client.post(
        "/v1/search", json={"query": "limescale", "collection": collection, "mode": "bm25"}
    ).json
    assert [h["doc_id"] for h in found["hits"]] == ["kettle"]
    counts = stats(client, collection)
    assert counts["documents"] == 3 and counts["keyword_chunks"] == counts["vector_chunks"] == 3
    # Same content again: unchanged; new content through PUT: version 2.
    assert add(client, collection, DOCS[:1])["unchanged"] == 1
    put = client.put(
        f"/v1/collections/{collection}/documents/kettle", json={"text": "Citric acid."}
    )
    assert put.status_code == 202
    assert wait_task(client, put.json["task_id"])["indexed"] == 1
    assert client.get(f"/v1/collections/{collection}/documents/kettle").json["version"] == 2


def test_a_document_that_cannot_be_indexed_is_reported_in_its_task(client, collection):
    task = add(client, collection, [{"id": "empty", "text": "   "}, DOCS[1]])
    assert task["state"] == "done" and task["indexed"] == 1 and "empty" in task["failed"]
    doc = client.get(f"/v1/collections/{collection}/documents/empty").json
    assert doc["status"] == "failed" and doc["error"]


@pytest.mark.parametrize(
    "body",
    [
        {"documents": []},
        {"documents": [{"id": "a"}]},
        {"documents": [{"id": "", "text": "x"}]},
        {"documents": [{"id": "a", "text": 5}]},
        {"documents": [{"id": "a", "text": "x", "content_type": "pdf"}]},
        {"documents": [{"id": "a", "text": "x", "extra": 1}]},
        {"docs": []},
    ],
)
def test_invalid_document_batches_are_422(client, collection, body):
    response = client.post(f"/v1/collections/{collection}/documents", json=body)
    assert response.status_code == 422 and error_code(response) == "invalid_request"


def test_batches_above_the_limit_are_413(make_app, collection):
    limited = make_app(max_batch_docs=2).test_client()
    response = limited.post(f"/v1/collections/{collection}/documents", json={"documents": DOCS})
    assert response.status_code == 413 and error_code(response) == "payload_too_large"
    lines = b"\n".join(json.dumps(d).encode() for d in DOCS)
    upload = limited.post(
        f"/v1/collections/{collection}/documents:upload",
        data={"file": (io.BytesIO(lines), "three.jsonl")},
        content_type="multipart/form-data",
    )
    assert upload.status_code == 413


def test_a_document_above_the_size_limit_is_413_and_nothing_is_accepted(make_app, collection):
    limited = make_app(max_document_bytes=1000).test_client()
    url = f"/v1/collections/{collection}/documents"
    big = {"id": "big", "text": "word " * 300}
    response = limited.post(url, json={"documents": [DOCS[0], big]})
    assert response.status_code == 413 and error_code(response) == "payload_too_large"
    message = response.json["error"]["message"]
    assert "big" in message and "SIEVE_MAX_DOCUMENT_BYTES" in message
    lines = b"\n".join(json.dumps(d).encode() for d in [DOCS[0], big])
    for data, name in ((lines, "two.jsonl"), (b"x" * 1001, "huge.txt")):
        upload = limited.post(
            f"{url}:upload",
            data={"file": (io.BytesIO(data), name)},
            content_type="multipart/form-data",
        )
        assert upload.status_code == 413, name
        assert name in upload.json["error"]["message"]
    assert stats(limited, collection)["documents"] == 0
    small = limited.post(url, json={"documents": [DOCS[0]]})
    assert small.status_code == 202


def test_deletes(client, collection):
    add(client, collection, DOCS)
    before = stats(client, collection)
    for body in ({"ids": []}, {"ids": [""]}, {}, {"ids": "kettle"}):
        response = client.post(f"/v1/collections/{collection}/documents:delete", json=body)
        assert response.status_code == 422 and error_code(response) == "invalid_request"
    assert stats(client, collection) == before  # nothing was deleted
    batch = client.post(
        f"/v1/collections/{collection}/documents:delete", json={"ids": ["kettle", "ghost"]}
    )
    assert batch.json == {"deleted": ["kettle"], "not_found": ["ghost"]}
    unknown = client.delete(f"/v1/collections/{collection}/documents/ghost")
    assert unknown.status_code == 404 and error_code(unknown) == "not_found"
    one = client.delete(f"/v1/collections/{collection}/documents/tyre")
    assert one.status_code == 200 and one.json == {"deleted": ["tyre"]}
    assert client.get(f"/v1/collections/{collection}/documents/tyre").status_code == 404
    after = stats(client, collection)
    assert after["documents"] == 1 and after["keyword_chunks"] == after["vector_chunks"] == 1


def test_upload_of_every_file_type_with_a_malformed_jsonl_line(client, collection):
    jsonl = (
        b'{"_id": "j1", "title": "Tea", "text": "Store green tea in a dark tin."}\n'
        b'{"_id": "j2", "text": \n'  # malformed
        b'{"_id": "j3", "text": "Brew oolong at 90 degrees."}\n'
    )
    files = [
        (io.BytesIO(b"Plain notes about compost heaps."), "notes.txt"),
        (io.BytesIO(b"# Router guide\n\nRestart the router first."), "guide.md"),
        (
            io.BytesIO(b"<html><head><title>Kettle page</title></head><body>Boil</body></html>"),
            "page.html",
        ),
        (io.BytesIO(tiny_pdf("Solar panels convert sunlight", "Solar paper")), "paper.pdf"),
        (io.BytesIO(jsonl), "tea.jsonl"),
    ]
    response = client.post(
        f"/v1/collections/{collection}/documents:upload",
        data={"file": files},
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    task = wait_task(client, response.json["task_id"])
    assert task["state"] == "done" and task["indexed"] == 6 and task["total"] == 6
    assert len(task["errors"]) == 1 and task["errors"][0].startswith("tea.jsonl:2:")
    docs = {
        doc_id: client.get(f"/v1/collections/{collection}/documents/{doc_id}").json
        for doc_id in ("notes.txt", "guide.md", "page.html", "paper.pdf", "j1", "j3")
    }
    assert all(doc["status"] == "indexed" for doc in docs.values()), docs
    assert docs["guide.md"]["title"] == "Router guide"
    assert docs["page.html"]["title"] == "Kettle page"
    assert docs["paper.pdf"]["title"] == "Solar paper"
    assert "Solar panels" in docs["paper.pdf"]["text"]
    found = client.post(
        "/v1/search", json={"query": "sunlight", "collection": collection, "mode": "bm25"}
    ).json
    assert found["hits"][0]["doc_id"] == "paper.pdf"


def test_bad_uploads_are_422(client, collection):
    url = f"/v1/collections/{collection}/documents:upload"
    exe = client.post(
        url, data={"file": (io.BytesIO(b"MZ"), "tool.exe")}, content_type="multipart/form-data"
    )
    assert exe.status_code == 422 and "unsupported" in exe.json["error"]["message"]
    none = client.post(url, data={"other": "x"}, content_type="multipart/form-data")
    assert none.status_code == 422
    broken = client.post(
        url,
        data={"file": (io.BytesIO(b"%PDF-1.4 junk"), "x.pdf")},
        content_type="multipart/form-data",
    )
    task = wait_task(client, broken.json["task_id"])
    assert task["state"] == "done" and task["indexed"] == 0 and "x.pdf" in task["errors"][0]


def test_an_unsupported_file_beside_readable_ones_is_refused_alone(client, collection):
    files = [
        (io.BytesIO(b"MZ" + b"\0" * 64), "tool.exe"),
        (io.BytesIO(b"Pinch the soft part of the nose."), "nosebleed.txt"),
    ]
    response = client.post(
        f"/v1/collections/{collection}/documents:upload",
        data={"file": files},
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    results = {f["name"]: f for f in response.json["files"]}
    assert results["tool.exe"]["state"] == "refused" and results["tool.exe"]["documents"] == 0
    assert results["tool.exe"]["errors"][0].startswith("tool.exe: unsupported file type; upload")
    assert results["nosebleed.txt"]["state"] == "accepted"
    task = wait_task(client, response.json["task_id"])
    assert task["indexed"] == 1 and any("tool.exe" in line for line in task["errors"])


def test_two_uploaded_files_of_one_name_are_refused_whole(client, collection):
    url = f"/v1/collections/{collection}/documents:upload"
    files = [
        (io.BytesIO(b"Kettles boil water."), "a/notes.txt"),
        (io.BytesIO(b"Pans fry eggs."), "b/notes.txt"),
        (io.BytesIO(b"Other file."), "other.txt"),
    ]
    response = client.post(url, data={"file": files}, content_type="multipart/form-data")
    assert response.status_code == 422 and error_code(response) == "invalid_request"
    assert "notes.txt" in response.json["error"]["message"]
    assert client.get(f"/v1/collections/{collection}/stats").json["documents"] == 0
    assert client.get(f"/v1/collections/{collection}/documents/notes.txt").status_code == 404


def test_unknown_things_are_404(client, collection):
    assert client.get("/v1/tasks/no-such-task").status_code == 404
    assert client.get(f"/v1/collections/{collection}/documents/nope").status_code == 404
    response = client.post("/v1/collections/ghost-coll/documents", json={"documents": DOCS})
    assert response.status_code == 404 and error_code(response) == "not_found"
    assert client.get("/v1/collections/ghost-coll/stats").status_code == 404


def test_document_ids_may_hold_slashes(client, collection):
    add(client, collection, [{"id": "guides/bikes/tyre.md", "text": "Tyre levers help."}])
    doc = client.get(f"/v1/collections/{collection}/documents/guides/bikes/tyre.md")
    assert doc.status_code == 200 and doc.json["id"] == "guides/bikes/tyre.md"


def test_documents_are_listed_in_pages_with_their_state(client, collection):
    docs = [{"id": f"doc-{i:02d}", "title": f"T{i}", "text": f"words {i} here"} for i in range(5)]
    task = add(client, collection, [*docs, {"id": "empty", "text": "   "}])
    assert task["indexed"] == 5
    url = f"/v1/collections/{collection}/documents"
    first = client.get(url, query_string={"limit": 4}).json
    assert [d["id"] for d in first["documents"]] == ["doc-00", "doc-01", "doc-02", "doc-03"]
    assert first["next_after"] == "doc-03"
    assert first["documents"][0] == {
        "id": "doc-00", "title": "T0", "status": "indexed", "chunks": 1, "error": None,
        "updated_at": first["documents"][0]["updated_at"],
    }  # fmt: skip
    rest = client.get(url, query_string={"limit": 4, "after": "doc-03"}).json
    assert [d["id"] for d in rest["documents"]] == ["doc-04", "empty"]
    assert rest["next_after"] is None
    failed = rest["documents"][1]
    assert failed["status"] == "failed" and failed["error"]
    assert client.get(url).json["next_after"] is None  # the default page holds all six
    for bad in ("0", "201", "x", "-1"):
        response = client.get(url, query_string={"limit": bad})
        assert response.status_code == 422 and "limit" in response.json["error"]["message"]
    assert client.get("/v1/collections/nope/documents").status_code == 404


def test_the_listing_filters_by_prefix_state_and_metadata_and_pages_filtered(client, collection):
    docs = [
        {"id": f"faq/{i}", "text": f"answer {i}", "metadata": {"lang": "en" if i % 2 else "de"}}
        for i in range(6)
    ]
    docs += [
        {"id": "faq_x", "text": "other words", "metadata": {"lang": "en", "rank": 3}},
        {"id": "guide", "text": "   ", "metadata": {"lang": "en"}},  # fails: no text
    ]
    add(client, collection, docs)
    url = f"/v1/collections/{collection}/documents"

    def ids(**query):
        response = client.get(url, query_string=query)
        assert response.status_code == 200, response.json
        return [d["id"] for d in response.json["documents"]], response.json["next_after"]

    assert ids(prefix="faq/") == ([f"faq/{i}" for i in range(6)], None)
    assert ids(prefix="faq_") == (["faq_x"], None)  # "_" matches only itself
    assert ids(status="failed") == (["guide"], None)
    assert ids(status="indexed", prefix="g") == ([], None)
    assert ids(**{"meta.lang": "en"}) == (["faq/1", "faq/3", "faq/5", "faq_x", "guide"], None)
    assert ids(**{"meta.rank": "3"}) == (["faq_x"], None)
    both = client.get(url, query_string=[("meta.lang", "en"), ("meta.lang", "de")]).json
    assert len(both["documents"]) == 8  # a repeated key: any of its values
    # Paging a filtered listing: full pages of matches, continued with `after`.
    first = ids(**{"meta.lang": "en", "status": "indexed", "limit": 2})
    assert first == (["faq/1", "faq/3"], "faq/3")
    second = ids(**{"meta.lang": "en", "status": "indexed", "limit": 2, "after": "faq/3"})
    assert second == (["faq/5", "faq_x"], "faq_x")
    assert ids(**{"meta.lang": "en", "status": "indexed", "limit": 2, "after": "faq_x"}) == (
        [],
        None,
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"status": "done"}, "status: one of pending, indexed, failed, not 'done'"),
        ({"prefix": "p" * 513}, "prefix: at most 512 characters, not 513"),
        ({"meta.": "en"}, "metadata filter key ''"),
        ({"meta.a b": "en"}, "metadata filter key 'a b'"),
        ({"lang": "en"}, "unknown parameter 'lang'"),
    ],
)
def test_bad_listing_filters_are_422_in_one_line(client, collection, query, message):
    response = client.get(f"/v1/collections/{collection}/documents", query_string=query)
    assert response.status_code == 422 and error_code(response) == "invalid_request"
    assert response.json["error"]["message"].startswith(message)
    assert "\n" not in response.json["error"]["message"]


def test_a_documents_chunks_show_where_each_is_indexed(client, engine, collection):
    long_text = " ".join(f"word{i} about kettles and tea" for i in range(200))
    add(client, collection, [
        {"id": "long", "title": "Kettles", "text": long_text},
        {"id": "short", "text": "One short passage."},
    ])  # fmt: skip
    url = f"/v1/collections/{collection}/chunks"
    answer = client.get(url, query_string={"doc_id": "long"})
    assert answer.status_code == 200, answer.json
    body = answer.json
    chunks = body["chunks"]
    record = client.get(f"/v1/collections/{collection}/documents/long").json
    assert len(chunks) == record["chunks"] > 1 and body["version"] == record["version"]
    assert [c["ordinal"] for c in chunks] == list(range(len(chunks)))
    assert all(c["indexes"] == {"keyword": True, "vector": True} for c in chunks)
    assert chunks[0]["start"] == 0 and chunks[0]["end"] <= chunks[1]["end"]
    assert chunks[0]["preview"].startswith("word0 about") and chunks[0]["tokens"] > 0
    assert all(len(c["preview"]) <= 241 for c in chunks)
    assert body["indexes"]["keyword"] == {"missing": [], "stale": [], "orphans": []}

    # Gone from the BM25 index only, through that index's own API: the vector marks stay.
    engine.collection(collection).keyword.delete_documents(["long"])
    after = client.get(url, query_string={"doc_id": "long"}).json
    assert all(c["indexes"] == {"keyword": False, "vector": True} for c in after["chunks"])
    assert after["indexes"]["keyword"]["missing"] == sorted(c["id"] for c in chunks)
    assert after["indexes"]["vector"]["missing"] == []
    short = client.get(url, query_string={"doc_id": "short"}).json
    assert short["chunks"][0]["indexes"] == {"keyword": True, "vector": True}

    missing = client.get(url, query_string={"doc_id": "nope"})
    assert missing.status_code == 404 and error_code(missing) == "not_found"
    unnamed = client.get(url)
    assert unnamed.status_code == 422 and "doc_id" in unnamed.json["error"]["message"]


def test_an_upload_answers_each_files_result(client, collection):
    files = [
        (io.BytesIO(b'{"_id": "g1", "text": "Good line."}\n{"_id": "g2", "text": "Also good."}\n'),
         "good.jsonl"),
        (io.BytesIO(b'{"_id": "b1", "text": \n{"_id": "b2"\n'), "broken.jsonl"),
        (io.BytesIO(b'{"_id": "m1", "text": "Fine."}\nnot json\n'), "mixed.jsonl"),
        (io.BytesIO(b"  \n"), "blank.txt"),
        (io.BytesIO(b"\n\n"), "none.jsonl"),
    ]  # fmt: skip
    response = client.post(
        f"/v1/collections/{collection}/documents:upload",
        data={"file": files},
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    results = {f["name"]: f for f in response.json["files"]}
    assert list(results) == ["good.jsonl", "broken.jsonl", "mixed.jsonl", "blank.txt", "none.jsonl"]
    assert results["good.jsonl"] == {
        "name": "good.jsonl", "state": "accepted", "documents": 2, "errors": [],
    }  # fmt: skip
    broken = results["broken.jsonl"]
    assert broken["state"] == "refused" and broken["documents"] == 0
    assert [line.split(":")[:2] for line in broken["errors"]] == [
        ["broken.jsonl", "1"], ["broken.jsonl", "2"],
    ]  # fmt: skip
    mixed = results["mixed.jsonl"]
    assert mixed["state"] == "accepted" and mixed["documents"] == 1
    assert mixed["errors"][0].startswith("mixed.jsonl:2:")
    assert results["blank.txt"]["state"] == "refused"
    assert results["blank.txt"]["errors"] == ["blank.txt: empty file (no text in it)"]
    assert results["none.jsonl"]["errors"] == ["none.jsonl: empty file (no documents in it)"]
    task = wait_task(client, response.json["task_id"])
    assert task["indexed"] == 3 and task["total"] == 3
    assert len(task["errors"]) == 5  # the same lines, in the task
    assert client.get(f"/v1/collections/{collection}/documents/blank.txt").status_code == 404
