"""The web pages in a real browser (Debian's Chromium through Playwright) against the live app.

The server is ``support.live_server``: the sample corpus in ``default``, reranked by the tiny
cross-encoder, so the compare view has two different orders. Tests that write create their own
collection from the admin page. Every test also checks that the page logged no console error.

The browser is ``support.browser``'s (``SIEVE_E2E_SCREENSHOTS=<folder>`` keeps screenshots).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from support.browser import open_tab, screenshot

pytestmark = pytest.mark.e2e

TASK_TIMEOUT_MS = 60_000
# Chromium logs every 4xx/5xx answer to fetch() as a console error; only the test that
# provokes an API error expects these.
FAILED_RESOURCE = re.compile(r"^Failed to load resource: the server responded with a status of 4")


@pytest.fixture
def page(browser, live_server, console_errors) -> Iterator[Any]:
    with open_tab(browser, live_server.url, console_errors) as tab:
        yield tab


def search(page, query: str, *, mode: str = "hybrid", rerank: bool = True, collection: str = ""):
    """Open the search page, fill the form, press Enter, wait for the answer; the hits."""
    from playwright.sync_api import expect

    page.goto("/")
    if collection:
        option = page.locator(f'[data-testid=collection-select] option[value="{collection}"]')
        expect(option).to_have_count(1)
        page.get_by_test_id("collection-select").select_option(collection)
    page.get_by_test_id("mode").select_option(mode)
    page.get_by_test_id("rerank").set_checked(rerank)
    page.get_by_test_id("query").fill(query)
    page.get_by_test_id("query").press("Enter")
    expect(page.get_by_test_id("summary")).to_contain_text("in the window")
    return page.get_by_test_id("hit")


def hit_ids(locator) -> list[str]:
    return [item.get_attribute("data-doc-id") for item in locator.all()]


def create_collection(page) -> str:
    """Create a fresh collection from the admin page (which then selects it)."""
    from playwright.sync_api import expect

    name = f"e2e-{uuid.uuid4().hex[:10]}"
    page.goto("/admin")
    page.get_by_test_id("new-collection").fill(name)
    page.get_by_test_id("create-button").click()
    expect(page.get_by_test_id("status")).to_contain_text(f"Collection {name} created")
    expect(page.get_by_test_id("collection-select")).to_have_value(name)
    expect(page.get_by_test_id("stat-documents")).to_have_text("0")
    return name


def wait_task_done(page, documents: int = 1) -> Any:
    """The newest task card, once its task is done."""
    from playwright.sync_api import expect

    task = page.get_by_test_id("task").first
    expect(task.get_by_test_id("task-state")).to_have_text("done", timeout=TASK_TIMEOUT_MS)
    # The page then refreshes its counts and list; a click before that can land on a row
    # that is about to be drawn again.
    expect(task).to_have_attribute("data-settled", "true")
    expect(task.get_by_test_id("task-progress")).to_have_text(f"{documents}/{documents} processed")
    expect(task.get_by_test_id("task-counts")).to_contain_text(f"indexed {documents} ")
    return task


def test_search_shows_highlighted_hits_with_their_source(page, console_errors):
    # The key typed into the page is kept for the tab and sent as a bearer token
    # (the live server is open, so any key passes).
    page.goto("/")
    page.get_by_test_id("api-key").fill("e2e-key")
    page.get_by_test_id("api-key").press("Tab")
    with page.expect_request("**/v1/search") as sent:
        hits = search(page, "cast iron pan", mode="bm25")
    assert sent.value.headers["authorization"] == "Bearer e2e-key"
    assert page.get_by_test_id("api-key").input_value() == "e2e-key"
    assert hits.count() >= 2
    # BM25 only returns passages holding a query term: every snippet marks one.
    for hit in hits.all():
        marks = [m.lower() for m in hit.locator("[data-testid=snippet] mark").all_inner_texts()]
        assert marks and set(marks) <= {"cast", "iron", "pan", "pans"}, marks
        assert hit.get_by_test_id("doc-id").inner_text()
        assert hit.get_by_test_id("hit-title").inner_text()
        assert re.fullmatch(r"#\d+ · [\d.]+", hit.get_by_test_id("prov-bm25").inner_text())
        assert hit.get_by_test_id("prov-vector").inner_text() == "—"
    guide = page.locator('[data-testid=hit][data-doc-id="en-cast-iron-buying-guide"]')
    assert guide.get_by_test_id("hit-title").inner_text() == "Choosing a cast iron pan"
    assert guide.get_by_test_id("meta-lang").inner_text() == "en"
    assert guide.get_by_test_id("meta-topic").inner_text() == "home-kitchen"
    # The snippet is the server's escaped text: nothing but text and <mark> reaches the page.
    tags = page.eval_on_selector_all(
        "[data-testid=snippet] *", "nodes => [...new Set(nodes.map(n => n.tagName))]"
    )
    assert tags == ["MARK"]
    assert console_errors == []


def test_compare_view_shows_retrieval_and_reranked_orders(page, console_errors):
    from playwright.sync_api import expect

    hits = search(page, "cast iron pan")
    results = hit_ids(hits)
    expect(page.get_by_test_id("summary")).to_contain_text("reranked (top")
    retrieval_rows = page.get_by_test_id("retrieval-order").get_by_test_id("compare-row")
    reranked_rows = page.get_by_test_id("reranked-order").get_by_test_id("compare-row")
    retrieval, reranked = hit_ids(retrieval_rows), hit_ids(reranked_rows)
    assert reranked == results
    assert sorted(retrieval) == sorted(reranked) and len(retrieval) == len(results) == 10
    assert retrieval != reranked, "the tiny reranker should reorder the fused list"
    for rows in (retrieval_rows, reranked_rows):
        widths = [
            float(style.removeprefix("width: ").removesuffix("%"))
            for style in rows.locator("[data-testid=score-bar]").evaluate_all(
                "bars => bars.map(b => b.getAttribute('style'))"
            )
        ]
        assert len(widths) == len(results) and max(widths) == 100.0
        assert all(0 <= w <= 100 for w in widths)
        moves = rows.get_by_test_id("move").all_inner_texts()
        assert all(re.fullmatch(r"↑\d+|↓\d+|=", m) for m in moves), moves
    assert page.get_by_test_id("not-reranked").is_hidden()
    expect(page.get_by_test_id("reranker-status")).to_contain_text("Reranker: ")
    expect(page.get_by_test_id("reranker-status")).to_contain_text("not calibrated")
    assert page.get_by_test_id("rerank").is_enabled()
    stages = (
        page.get_by_test_id("timings")
        .locator("tbody tr")
        .evaluate_all("rows => rows.map(r => r.dataset.stage)")
    )
    assert {"bm25", "vector", "fusion", "rerank", "total"} <= set(stages), stages
    screenshot(page, "sieve-search.png")

    page.get_by_test_id("next-page").click()
    expect(page.get_by_test_id("page-label")).to_have_text("Page 2")
    assert not set(hit_ids(hits)) & set(results)  # pages are slices of one window
    page.get_by_test_id("prev-page").click()
    expect(page.get_by_test_id("page-label")).to_have_text("Page 1")
    assert hit_ids(hits) == results
    assert console_errors == []


@pytest.fixture
def bare_page(browser, live_server, console_errors, tmp_path) -> Iterator[Any]:
    """A tab on a second server that has no reranker (an empty models folder)."""
    from support.live_server import serve

    from api.app import create_app
    from api.settings import ApiSettings, ServiceSettings
    from api.state import EXTENSION
    from search.config import Settings
    from search.engine import SearchEngine

    settings = Settings.from_env({}).with_overrides(
        data_dir=tmp_path / "data", rerank_models_dir=tmp_path / "models"
    )
    engine = SearchEngine(settings, embedder=live_server.engine.embedder)
    assert engine.reranker is None
    app = create_app(ServiceSettings(engine=settings, api=ApiSettings(rate_limit="")), engine)
    with serve(app) as url, open_tab(browser, url, console_errors) as tab:
        yield tab
    app.extensions[EXTENSION].jobs.close()
    engine.close()


def test_without_a_reranker_the_box_is_off_with_the_reason_and_fix(bare_page, console_errors):
    from playwright.sync_api import expect

    page = bare_page
    page.goto("/")
    box = page.get_by_test_id("rerank")
    expect(box).to_be_disabled()
    expect(box).not_to_be_checked()
    status = page.get_by_test_id("reranker-status")
    expect(status).to_contain_text("No reranker: ")
    expect(page.get_by_test_id("reranker-why")).to_contain_text("is not on this machine")
    expect(page.get_by_test_id("reranker-fix")).to_contain_text("sieve models pull ")
    screenshot(page, "sieve-search-no-reranker.png")
    page.get_by_test_id("query").fill("storm")
    page.get_by_test_id("query").press("Enter")
    expect(page.get_by_test_id("summary")).to_contain_text("in the window")
    assert console_errors == []


def test_not_reranked_and_degraded_notices(page, console_errors):
    from playwright.sync_api import expect

    search(page, "cast iron pan", rerank=False)
    notice = page.get_by_test_id("not-reranked")
    expect(notice).to_contain_text("Not reranked: reranking was turned off")
    expect(page.get_by_test_id("summary")).to_contain_text("not reranked")
    assert page.get_by_test_id("reranked-order").get_by_test_id("compare-row").count() == 0
    assert page.get_by_test_id("retrieval-order").get_by_test_id("compare-row").count() == 10

    # A server whose vector leg and reranker failed: the answer is rewritten on its way to the
    # page, so this checks what the page makes of "degraded" alone.
    def degrade(route):
        answer = route.fetch().json()
        answer.update(
            reranked=False,
            rerank_window=0,
            degraded=["vector", "rerank"],
            degraded_reasons={"vector": "missed its 5 s deadline", "rerank": "model busy"},
        )
        for hit in answer["hits"]:
            hit.update(vector=None, rerank=None)
        route.fulfill(json=answer)

    page.route("**/v1/search", degrade)
    search(page, "cast iron pan")
    degraded = page.get_by_test_id("degraded")
    expect(degraded).to_have_count(2)
    expect(degraded.first).to_contain_text("vector")
    expect(degraded.first).to_contain_text("missed its 5 s deadline")
    expect(notice).to_contain_text("the reranker failed or answered too late (model busy)")
    assert console_errors == []


def test_upload_files_then_find_them(page, console_errors, tmp_path):
    from playwright.sync_api import expect

    collection = create_collection(page)
    note = tmp_path / "quokka-notes.md"
    note.write_text(
        "# Quokka field notes\n\nThe quokka naps under saltbush and forages for "
        "zephyrwort leaves at dusk.\n",
        encoding="utf-8",
    )
    batch = tmp_path / "more.jsonl"
    good = {"_id": "wombat", "title": "Wombat burrows", "text": "Wombats dig deep burrows."}
    batch.write_text(json.dumps(good) + "\n{not json\n", encoding="utf-8")
    page.get_by_test_id("files").set_input_files([str(note), str(batch)])
    page.get_by_test_id("upload-button").click()
    task = wait_task_done(page, documents=2)
    # The malformed line is reported against its file and line; the rest is indexed.
    expect(task.get_by_test_id("task-counts")).to_contain_text("1 file error")
    expect(task.get_by_test_id("task-error")).to_contain_text("more.jsonl:2")
    expect(page.get_by_test_id("stat-documents")).to_have_text("2")
    expect(page.get_by_test_id("collection-select")).to_contain_text(f"{collection} (2 documents)")
    screenshot(page, "sieve-admin.png")

    hits = search(page, "zephyrwort", mode="bm25", collection=collection)
    assert hit_ids(hits) == ["quokka-notes.md"]
    hit = hits.first
    assert hit.get_by_test_id("hit-title").inner_text() == "Quokka field notes"
    assert hit.locator("[data-testid=snippet] mark").all_inner_texts() == ["zephyrwort"]
    assert console_errors == []


def test_paste_a_document_find_it_then_delete_it(page, console_errors):
    from playwright.sync_api import expect

    collection = create_collection(page)
    page.get_by_test_id("doc-id").fill("faq/teapot")
    page.get_by_test_id("doc-title").fill("Descaling a teapot")
    page.get_by_test_id("content-type").select_option("markdown")
    page.get_by_test_id("doc-text").fill("Soak the **teapot** in citric brindlewash overnight.")
    page.get_by_test_id("doc-metadata").fill(json.dumps({"lang": "en", "topic": "faq"}))
    page.get_by_test_id("paste-button").click()
    wait_task_done(page)

    hits = search(page, "brindlewash", mode="bm25", collection=collection)
    assert hit_ids(hits) == ["faq/teapot"]
    assert hits.first.get_by_test_id("meta-topic").inner_text() == "faq"

    page.goto("/admin")
    page.get_by_test_id("collection-select").select_option(collection)
    page.get_by_test_id("delete-id").fill("faq/teapot")
    page.get_by_test_id("delete-button").click()
    confirm = page.get_by_test_id("confirm-delete")
    expect(confirm).to_contain_text("faq/teapot")
    page.get_by_test_id("confirm-no").click()
    expect(confirm).to_be_hidden()
    page.get_by_test_id("delete-button").click()
    page.get_by_test_id("confirm-yes").click()
    deleted = page.get_by_test_id("delete-status")  # next to the form, not at the top
    expect(deleted).to_have_text(f"Deleted faq/teapot from {collection}.")
    expect(deleted).to_be_in_viewport()
    expect(page.get_by_test_id("stat-documents")).to_have_text("0")
    expect(search(page, "brindlewash", mode="bm25", collection=collection)).to_have_count(0)
    assert console_errors == []


def test_document_list_pages_shows_states_and_deletes_from_a_row(page, console_errors):
    from playwright.sync_api import expect

    collection = create_collection(page)
    lines = [
        {"_id": f"doc-{i:02d}", "title": f"Note {i}", "text": f"note {i} words"} for i in range(22)
    ]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    page.get_by_test_id("files").set_input_files(
        files=[{"name": "notes.jsonl", "mimeType": "application/json", "buffer": data}]
    )
    page.get_by_test_id("upload-button").click()
    wait_task_done(page, 22)
    page.get_by_test_id("doc-id").fill("empty")
    page.get_by_test_id("doc-text").fill("   ")  # cannot be indexed: failed, with a reason
    page.get_by_test_id("paste-button").click()
    # The paste's own card: until it exists, .first would be the upload's finished one.
    expect(page.get_by_test_id("task")).to_have_count(2)
    task = page.get_by_test_id("task").first
    expect(task.get_by_test_id("task-state")).to_have_text("done", timeout=TASK_TIMEOUT_MS)
    expect(task).to_have_attribute("data-settled", "true")

    rows = page.get_by_test_id("document-row")
    expect(rows).to_have_count(20)  # the first page
    expect(rows.first).to_have_attribute("data-doc-id", "doc-00")
    page.get_by_test_id("documents-next").click()
    expect(page.get_by_test_id("documents-page")).to_have_text("page 2")
    expect(rows).to_have_count(3)
    failed = page.locator('[data-testid=document-row][data-doc-id="empty"]')
    expect(failed.get_by_test_id("row-state")).to_contain_text("failed")
    expect(failed.get_by_test_id("row-state")).to_contain_text("empty")  # why it failed
    screenshot(page, "admin-documents.png")

    row = page.locator('[data-testid=document-row][data-doc-id="doc-21"]')
    row.get_by_test_id("row-delete").click()
    row.get_by_test_id("row-confirm-no").click()
    expect(rows).to_have_count(3)
    row.get_by_test_id("row-delete").click()
    row.get_by_test_id("row-confirm-yes").click()
    status = page.get_by_test_id("documents-status")
    expect(status).to_have_text(f"Deleted doc-21 from {collection}.")
    expect(status).to_be_in_viewport()
    expect(rows).to_have_count(2)
    expect(page.get_by_test_id("stat-documents")).to_have_text("22")
    option = page.locator(f'[data-testid=collection-select] option[value="{collection}"]')
    expect(option).to_have_text(f"{collection} (22 documents)")  # the chooser agrees

    # Deleted behind the page's back: the row's delete fails, and the old success goes.
    gone = page.request.delete(f"/v1/collections/{collection}/documents/doc-20")
    assert gone.ok
    page.locator('[data-testid=document-row][data-doc-id="doc-20"]').get_by_test_id(
        "row-delete"
    ).click()
    page.get_by_test_id("row-confirm-yes").click()
    alert = page.get_by_test_id("documents-alert")
    expect(alert).to_contain_text("document 'doc-20' not found (HTTP 404, not_found)")
    expect(alert).to_be_in_viewport()
    expect(status).to_be_empty()
    assert all(FAILED_RESOURCE.match(e) for e in console_errors), console_errors


def upload(page, *files: tuple[str, bytes]) -> None:
    page.get_by_test_id("files").set_input_files(
        files=[{"name": n, "mimeType": "application/octet-stream", "buffer": b} for n, b in files]
    )
    page.get_by_test_id("upload-button").click()


def jsonl(*records: dict[str, Any]) -> bytes:
    return "\n".join(json.dumps(r) for r in records).encode()


def test_uploaded_files_each_show_their_result(page, console_errors):
    from playwright.sync_api import expect

    collection = create_collection(page)
    good = jsonl({"_id": "g1", "text": "good one"}, {"_id": "g2", "text": "good two"})
    upload(page, ("good.jsonl", good), ("broken.jsonl", b'{"_id": "b1", "text": \n'))
    files = page.get_by_test_id("upload-file")
    expect(files).to_have_count(2)
    accepted = page.locator('[data-testid=upload-file][data-file="good.jsonl"]')
    expect(accepted).to_have_attribute("data-state", "accepted")
    expect(accepted.get_by_test_id("upload-file-state")).to_have_text("accepted, 2 documents")
    refused = page.locator('[data-testid=upload-file][data-file="broken.jsonl"]')
    expect(refused).to_have_attribute("data-state", "refused")
    expect(refused.get_by_test_id("upload-file-state")).to_have_text("refused")
    expect(refused.get_by_test_id("upload-file-error")).to_contain_text("broken.jsonl:1:")
    expect(page.get_by_test_id("upload-status")).to_have_text(
        f"Upload: 1 of 2 files accepted, 2 documents to index into {collection}."
    )
    expect(page.get_by_test_id("upload-status")).to_be_in_viewport()
    wait_task_done(page, 2)
    expect(page.get_by_test_id("stat-documents")).to_have_text("2")
    screenshot(page, "admin-upload-files.png")
    assert console_errors == []


def test_document_list_filters_by_prefix_state_and_metadata(page, console_errors):
    from playwright.sync_api import expect

    collection = create_collection(page)
    records = [
        {"_id": f"faq/{i}", "text": f"answer {i}", "metadata": {"lang": "en" if i % 2 else "de"}}
        for i in range(4)
    ]
    upload(page, ("faq.jsonl", jsonl(*records, {"_id": "guide", "text": "a guide"})))
    wait_task_done(page, 5)
    page.get_by_test_id("doc-id").fill("empty")
    page.get_by_test_id("doc-text").fill("   ")  # fails: no text
    page.get_by_test_id("paste-button").click()
    expect(page.get_by_test_id("task")).to_have_count(2)  # the paste's own card, not the upload's
    pasted = page.get_by_test_id("task").first
    expect(pasted.get_by_test_id("task-state")).to_have_text("done", timeout=TASK_TIMEOUT_MS)
    expect(pasted).to_have_attribute("data-settled", "true")
    rows = page.get_by_test_id("document-row")
    count = page.get_by_test_id("documents-count")
    expect(rows).to_have_count(6)
    expect(count).to_have_text("6 documents on this page · 6 in the collection")

    page.get_by_test_id("filter-prefix").fill("faq/")
    page.get_by_test_id("filter-apply").click()
    expect(rows).to_have_count(4)
    assert [r.get_attribute("data-doc-id") for r in rows.all()] == [f"faq/{i}" for i in range(4)]
    page.get_by_test_id("filter-meta").fill("lang=en")
    page.get_by_test_id("filter-apply").click()
    expect(rows).to_have_count(2)
    expect(count).to_have_text("2 documents matching the filter on this page · 6 in the collection")
    screenshot(page, "admin-documents-filtered.png")

    page.get_by_test_id("filter-clear").click()
    page.get_by_test_id("filter-status").select_option("failed")
    page.get_by_test_id("filter-apply").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-doc-id", "empty")

    # A delete under a filter: the filtered list, the stats and the chooser agree.
    page.get_by_test_id("filter-status").select_option("indexed")
    page.get_by_test_id("filter-prefix").fill("faq/")
    page.get_by_test_id("filter-apply").click()
    expect(rows).to_have_count(4)
    row = page.locator('[data-testid=document-row][data-doc-id="faq/3"]')
    row.get_by_test_id("row-delete").click()
    row.get_by_test_id("row-confirm-yes").click()
    expect(page.get_by_test_id("documents-status")).to_have_text(
        f"Deleted faq/3 from {collection}."
    )
    expect(rows).to_have_count(3)
    expect(page.get_by_test_id("stat-documents")).to_have_text("5")
    expect(count).to_have_text("3 documents matching the filter on this page · 5 in the collection")
    option = page.locator(f'[data-testid=collection-select] option[value="{collection}"]')
    expect(option).to_have_text(f"{collection} (5 documents)")

    page.get_by_test_id("filter-prefix").fill("nothing-like-this")
    page.get_by_test_id("filter-apply").click()
    expect(rows).to_have_count(0)
    expect(page.get_by_test_id("no-documents")).to_have_text("No document matches the filter.")
    page.get_by_test_id("filter-meta").fill("no-equals-sign")
    page.get_by_test_id("filter-apply").click()
    expect(page.get_by_test_id("documents-alert")).to_contain_text("write key=value")
    assert console_errors == []


def test_a_document_opens_with_its_chunks_and_where_each_is_indexed(
    page, console_errors, live_server
):
    from playwright.sync_api import expect

    collection = create_collection(page)
    long_text = " ".join(f"sentence {i} about quokkas and saltbush." for i in range(150))
    record = {"_id": "long", "title": "Quokka notes", "text": long_text, "metadata": {"lang": "en"}}
    upload(page, ("notes.jsonl", jsonl(record)))
    wait_task_done(page, 1)
    row = page.locator('[data-testid=document-row][data-doc-id="long"]')
    row.locator("td").nth(1).click()  # anywhere on the row
    detail = page.get_by_test_id("document-detail")
    expect(detail).to_be_visible()
    expect(detail.get_by_test_id("detail-title")).to_have_text("Quokka notes")
    expect(detail.get_by_test_id("detail-state")).to_have_text("indexed")
    expect(detail.get_by_test_id("detail-metadata")).to_have_text('lang="en"')
    chunks = detail.get_by_test_id("chunk-row")
    expect(chunks.first).to_be_visible()
    total = chunks.count()
    assert total > 1
    expect(detail.locator("[data-testid=chunk-keyword][data-present=true]")).to_have_count(total)
    expect(detail.locator("[data-testid=chunk-vector][data-present=true]")).to_have_count(total)
    expect(detail.get_by_test_id("detail-summary")).to_have_text(
        f"keyword: {total} of {total} chunks · vector: {total} of {total} chunks"
    )
    screenshot(page, "admin-document-detail.png")

    # Taken out of the BM25 index behind the page's back (through the index's own API).
    live_server.engine.collection(collection).keyword.delete_documents(["long"])
    detail.get_by_test_id("detail-close").click()
    expect(detail).to_be_hidden()
    row.get_by_test_id("row-open").click()
    expect(detail.locator("[data-testid=chunk-keyword][data-present=false]")).to_have_count(total)
    expect(detail.locator("[data-testid=chunk-vector][data-present=true]")).to_have_count(total)
    expect(detail.get_by_test_id("detail-summary")).to_have_text(
        f"keyword: 0 of {total} chunks · vector: {total} of {total} chunks"
    )
    assert console_errors == []


def test_api_errors_appear_in_the_alert_region(page, console_errors):
    from playwright.sync_api import expect

    page.goto("/admin")
    expect(page.get_by_test_id("alert")).to_be_empty()
    alert = page.get_by_role("alert")  # hidden while empty, so found only once it speaks
    page.get_by_test_id("new-collection").fill("Not A Name!")
    page.get_by_test_id("create-button").click()
    expect(alert).to_contain_text("String should match pattern")
    expect(alert).to_contain_text("HTTP 422, invalid_request")

    page.get_by_test_id("delete-id").fill("no-such-document")
    page.get_by_test_id("delete-button").click()
    page.get_by_test_id("confirm-yes").click()
    expect(alert).to_contain_text("document 'no-such-document' not found (HTTP 404, not_found)")
    assert console_errors and all(FAILED_RESOURCE.match(e) for e in console_errors), console_errors
