"""``/docs`` in a real browser: Swagger UI lists the API and its console sends real requests.

The server asks for an API key, so a request the console executes succeeds only
when the key given in its Authorize dialog travels with it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from support.browser import open_tab, screenshot

pytestmark = pytest.mark.e2e

KEY = "docs-console-key"


@pytest.fixture
def docs_tab(browser, live_server, console_errors) -> Iterator[Any]:
    """A tab on a second app over the live server's engine, one that needs ``KEY``."""
    from support.live_server import serve

    from api.app import create_app
    from api.settings import ApiSettings, ServiceSettings
    from api.state import EXTENSION

    engine = live_server.engine
    api = ApiSettings(rate_limit="", api_keys=f"{KEY}:admin")
    app = create_app(ServiceSettings(engine=engine.settings, api=api), engine)
    try:
        with serve(app) as url, open_tab(browser, url, console_errors) as tab:
            yield tab
    finally:
        app.extensions[EXTENSION].jobs.close()


def test_the_console_authorizes_and_runs_a_search(docs_tab, console_errors):
    from playwright.sync_api import expect

    page = docs_tab
    page.goto("/docs")
    search = page.locator("#operations-search-post_v1_search")
    expect(search).to_be_visible()
    expect(page.locator(".opblock")).to_have_count(len(_documented_operations(page)))

    page.locator("button.authorize").first.click()
    dialog = page.locator(".modal-ux")
    api_key = dialog.locator(".auth-container").filter(has_text="X-API-Key")
    api_key.locator("input").fill(KEY)
    api_key.locator("button.authorize").click()
    expect(api_key.locator("h6")).to_have_text("Authorized")
    api_key.locator("button.btn-done").click()

    search.locator(".opblock-summary").click()
    request_body = search.locator(".opblock-section-request-body")
    request_body.get_by_text("Schema", exact=True).click()
    request_body.get_by_role("button", name="top_k").click()  # a field, opened
    expect(request_body).to_contain_text("Hits per page.")  # its description, from the schema
    request_body.get_by_text("Example Value").click()
    search.get_by_role("button", name="Try it out").click()
    body = search.locator("textarea.body-param__text")
    expect(body).to_contain_text("how to stop a nosebleed")  # the schema's first example
    search.get_by_role("button", name="Execute").click()

    live = search.locator(".live-responses-table")
    expect(live.locator("tr.response .response-col_status")).to_have_text("200")
    answer = json.loads(_response_body(live))
    # The example's top_k (5), answered over the sample corpus (reranked by the tiny model,
    # whose order means nothing).
    assert answer["query"] == "how to stop a nosebleed" and len(answer["hits"]) == 5
    screenshot(page, "sieve-docs-console.png")
    assert console_errors == []


def test_without_a_key_the_console_shows_the_apis_401(docs_tab, console_errors):
    from playwright.sync_api import expect

    page = docs_tab
    page.goto("/docs")
    search = page.locator("#operations-search-post_v1_search")
    search.locator(".opblock-summary").click()
    search.get_by_role("button", name="Try it out").click()
    search.get_by_role("button", name="Execute").click()
    live = search.locator(".live-responses-table")
    expect(live.locator("tr.response .response-col_status")).to_contain_text("401")
    assert json.loads(_response_body(live))["error"]["code"] == "unauthorized"
    # Chromium logs the refused fetch itself; nothing else may fail on the page.
    assert [e for e in console_errors if "status of 401" not in e] == []


def _response_body(live: Any) -> str:
    return live.locator("tr.response .response-col_description pre").first.inner_text()


def _documented_operations(page: Any) -> list[str]:
    doc = page.request.get("/openapi.json").json()
    return [f"{m} {p}" for p, methods in doc["paths"].items() for m in methods]
