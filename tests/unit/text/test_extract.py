"""Main-content extraction for HTML: boilerplate out, headings in, a clear fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.config import Settings
from search.indexing import prepare
from search.ingest import iter_paths
from search.keyword.tantivy_index import TantivyKeywordIndex
from search.records import Staged
from search.text import analyze, clean_text
from search.text.clean import page_text
from search.text.extract import main_content
from search.types import Document

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
KETTLE = ROOT / "sample" / "docs" / "descaling-a-kettle.html"
PAGES = ROOT / "tests" / "data" / "html"


def paragraphs(html: str) -> list[str]:
    return clean_text(html, "html").split("\n\n")


def assert_absent(text: str, *phrases: str) -> None:
    found = [p for p in phrases if p.casefold() in text.casefold()]
    assert found == [], f"boilerplate indexed: {found}"


def test_kettle_page_keeps_article_and_headings_only():
    parts = paragraphs(KETTLE.read_text())
    assert parts[0] == "Descaling a kettle"
    assert "Using vinegar or citric acid" in parts
    assert parts[-1].startswith("Boil a full kettle of fresh water")
    assert_absent("\n".join(parts), "Home", "Contact us", "Cookie settings", "Privacy", "track(")


def test_blog_post_without_nav_sidebar_footer_or_cookie_banner():
    parts = paragraphs((PAGES / "blog-post.html").read_text())
    assert parts[0] == "Overwintering geraniums indoors"
    headings = {
        "When to bring them in",
        "Cutting back and watering",
        "Taking cuttings as insurance",
    }
    assert headings <= set(parts)  # every level, each its own paragraph
    assert any(p.startswith("Geraniums (strictly, pelargoniums)") for p in parts)
    assert_absent(
        "\n".join(parts),
        "We use cookies",  # the cookie banner
        "Accept all",
        "Houseplants",  # the menu
        "Popular posts",  # the sidebar
        "fungus gnats",
        "Share this post",
        "All rights reserved",  # the footer
        "Cookie settings",
    )


def test_docs_page_keeps_headings_and_code_in_place():
    parts = paragraphs((PAGES / "docs-page.html").read_text())
    assert parts[0] == "Configuring replication"
    assert {"Adding a replica", "Synchronous or asynchronous", "Monitoring replication lag"} <= set(
        parts
    )
    # Inline code stays in its sentence; a code block is a paragraph of its own.
    assert any(
        p.endswith("created on the primary with burrow token create --role replica:") for p in parts
    )
    assert "burrow start --replica-of 10.0.0.5:7400 --token $REPLICA_TOKEN" in parts
    assert_absent(
        "\n".join(parts), "Search docs", "Quickstart", "Installation", "»", "Previous", "Copyright"
    )


def test_short_page_keeps_its_content_without_the_furniture():
    html = (
        "<html><body><nav>Home</nav><p>Opening hours: 9 to 5.</p>"
        "<footer>Privacy</footer></body></html>"
    )
    assert clean_text(html, "html") == "Opening hours: 9 to 5."


@pytest.mark.parametrize(
    "html",
    [
        "<p>Hello <b>world</b></p>",
        "just text",
        "<div>" * 500 + "deep" + "</div>" * 500,
        "a <![ b <p>c</p>",
    ],
)
def test_nothing_extracted_means_the_whole_fragment_is_cleaned(html):
    # The fallback rule: no main content found -> every visible word is kept.
    assert main_content(html) is None
    assert clean_text(html, "html") == page_text(html)
    assert clean_text(html, "html")


def test_cookie_query_no_longer_finds_the_kettle_page(tmp_path):
    # The sample query that used to rank the kettle page first on its footer.
    # The files the demo indexes (``sieve demo``, ``sieve serve --demo``).
    sample = [ROOT / "sample" / "corpus.jsonl", ROOT / "sample" / "docs"]
    docs = [d for d in iter_paths(sample) if isinstance(d, Document)]
    assert len(docs) == 49
    prepared = [prepare(Staged(d, 1, True), Settings()) for d in docs]
    index = TantivyKeywordIndex(tmp_path / "tantivy")
    try:
        index.upsert(
            [c for p in prepared for c in p.chunks], [t for p in prepared for t in p.tokens]
        )
        hits = index.search(analyze("cookie settings privacy"), 10)
        assert "descaling-a-kettle.html" not in {h.doc_id for h in hits}
        kettle = index.search(analyze("descale kettle vinegar"), 3)
        assert kettle[0].doc_id == "descaling-a-kettle.html"
    finally:
        index.close()
