"""The main content of a web page: navigation, footers, sidebars and cookie banners left out.

trafilatura finds the main content (the article, the documentation body)
and returns it as its XML (TEI-like) tree, which keeps headings, paragraphs,
lists, tables and code apart. ``main_content`` maps that tree back to plain
HTML tags, so the one HTML renderer of ``search.text.clean`` lays it out as
it lays out any other HTML.

The rule when there is nothing to extract: ``main_content`` returns None and
the caller cleans the whole page. trafilatura's own last resort, which
flattens the whole page into a single paragraph (its "baseline", tried when
less than 250 characters were found), is switched off: the whole page
cleaned by Sieve keeps its structure, and a short page's real content is
still extracted on its own (an opening-hours page without its menu).
"""

from __future__ import annotations

import functools
from configparser import ConfigParser
from typing import Any

from bs4 import BeautifulSoup, Tag

# trafilatura's XML elements and the HTML element each one stands for.
# Headings of every level become one level: the renderer only needs to know
# that a heading is a paragraph of its own.
_TEI_TO_HTML = {
    "main": "div",
    "head": "h2",
    "p": "p",
    "list": "ul",
    "item": "li",
    "table": "table",
    "row": "tr",
    "cell": "td",
    "quote": "blockquote",
    "lb": "br",
    "graphic": "img",
    "hi": "span",
    "ref": "span",
    "del": "span",
}


@functools.cache
def _config() -> ConfigParser:
    """trafilatura's settings, with the baseline rescue and the alarm-based timeout off.

    MIN_EXTRACTED_SIZE 0: a short extraction is kept rather than replaced by
    the flattened whole page (see the module docstring). EXTRACTION_TIMEOUT 0:
    its timeout uses SIGALRM, which only works in a main thread, and indexing
    runs in worker threads.
    """
    from trafilatura.settings import use_config

    config = use_config()
    config.set("DEFAULT", "MIN_EXTRACTED_SIZE", "0")
    config.set("DEFAULT", "EXTRACTION_TIMEOUT", "0")
    return config


def _extract(html: str) -> str | None:
    # Imported here: trafilatura (lxml, justext, dateparser) takes a while to
    # import and only HTML documents need it.
    import trafilatura

    options: dict[str, Any] = {
        "output_format": "xml",
        "include_comments": False,  # reader comments are not the page's content
        "include_tables": True,
        "include_images": True,  # for their alt text, as the renderer keeps it
        "include_links": False,
        "include_formatting": False,
        "deduplicate": False,  # deterministic: no cache shared across documents
        "with_metadata": False,
        "config": _config(),
    }
    result: str | None = trafilatura.extract(html, **options)
    return result


def main_content(html: str) -> str | None:
    """The page's main content as plain HTML, or None when none is found."""
    xml = _extract(html)
    if not xml:
        return None
    tree = BeautifulSoup(xml, "html.parser")
    main = tree.find("main")
    if not isinstance(main, Tag) or not main.get_text(strip=True):
        return None
    for node in main.find_all(True):
        name = node.name
        if name == "code":
            # A code block stands alone in <main>; inline code sits in a paragraph.
            node.name = "pre" if node.parent is main else "span"
        else:
            node.name = _TEI_TO_HTML.get(name, "span")
        if node.name not in ("img",):
            node.attrs = {}
    main.name = "div"
    main.attrs = {}
    return str(main)
