"""Turn a document's raw text (plain, Markdown or HTML) into clean plain text.

HTML is reduced to the page's main content first (``search.text.extract``:
no navigation, footers, sidebars or cookie banners); a page where none is
found, such as a fragment of markup, is cleaned whole. Markdown is rendered
and cleaned whole: it has no page furniture to leave out.

Chunk offsets point into the output of ``clean_text``, so it must be
deterministic: the same input always gives the same characters.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import Comment, Declaration, Doctype, ProcessingInstruction
from bs4.exceptions import ParserRejectedMarkup
from markdown_it import MarkdownIt

from search.errors import InvalidRequest
from search.text.extract import main_content

CONTENT_TYPES = ("text", "markdown", "html")

# Elements whose text is never content.
_DROP = frozenset({"script", "style", "noscript", "template", "head", "title", "iframe", "svg"})
# Elements that stand as their own paragraph (blank line before and after).
_PARAGRAPH = frozenset(
    """p div h1 h2 h3 h4 h5 h6 section article main header footer nav aside pre
    blockquote table figure hr dl form fieldset details address center""".split()
)
# Elements that start a new line but not a new paragraph: list items stay
# together as one block, one per line.
_LINE = frozenset("li tr br dt dd ul ol figcaption caption summary option legend".split())
_CELL = frozenset({"td", "th"})
_SKIPPED_STRINGS = (Comment, Declaration, Doctype, ProcessingInstruction)

_NEWLINES_RE = re.compile(r"\r\n?|[\x0b\x0c\x85\u2028\u2029]")
# C0/C1 controls (newline and tab excepted), lone surrogates, and invisible
# characters that would split or pad words: soft hyphen, zero-width space,
# word joiner, BOM.
_CONTROL_RE = re.compile(
    "[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\u00ad\u200b\u2060\ufeff]"
)
_SPACES_RE = re.compile(r"[^\S\n]+")
_LINE_EDGES_RE = re.compile(r" ?\n ?")
_BLANK_LINES_RE = re.compile(r"\n{3,}")
_HTML_WS_RE = re.compile(r"\s+")


def clean_text(text: str, content_type: str = "text") -> str:
    """Plain text of ``text``, given as "text", "markdown" or "html".

    The result is NFC, without control characters, with spaces collapsed,
    lines stripped, at most one blank line between paragraphs, and stripped.
    """
    if content_type == "text":
        return normalize(text)
    if content_type == "html":
        main = main_content(text)
        return normalize(_html_to_text(text if main is None else main))
    if content_type == "markdown":
        # Rendering first means links keep their text, code keeps its code and
        # raw HTML inside Markdown is cleaned like any other HTML.
        return normalize(_html_to_text(_markdown().render(text)))
    raise InvalidRequest(
        f"content_type {content_type!r} is not valid; choose one of {', '.join(CONTENT_TYPES)}",
        content_type=content_type,
    )


def normalize(text: str) -> str:
    """The whitespace and Unicode normalisation every cleaned text gets."""
    text = _NEWLINES_RE.sub("\n", text)
    text = _CONTROL_RE.sub("", text)
    text = unicodedata.normalize("NFC", text)
    text = _SPACES_RE.sub(" ", text)
    text = _LINE_EDGES_RE.sub("\n", text)
    text = _BLANK_LINES_RE.sub("\n\n", text)
    return text.strip()


def page_text(html: str) -> str:
    """The visible text of a whole HTML page or fragment, without extracting main content."""
    return normalize(_html_to_text(html))


def html_title(html: str) -> str:
    """The text of the ``<title>``, else of the first ``<h1>``, else ""."""
    soup = _parse(html)
    for name in ("title", "h1"):
        tag = soup.find(name)
        if isinstance(tag, Tag):
            title = _HTML_WS_RE.sub(" ", tag.get_text(" ")).strip()
            if title:
                return normalize(title)
    return ""


def _parse(html: str) -> BeautifulSoup:
    """Parse with the stdlib parser, which raises on some malformed input.

    html.parser gives up on a broken ``<![`` section; such markup is then shown
    as text, and as a last resort so is every ``<``: user input must never raise.
    """
    for attempt in (html, html.replace("<![", "&lt;!["), html.replace("<", "&lt;")):
        try:
            return BeautifulSoup(attempt, "html.parser")
        except ParserRejectedMarkup:
            continue
    return BeautifulSoup("", "html.parser")


@functools.cache
def _markdown() -> MarkdownIt:
    # CommonMark with raw HTML allowed (the HTML cleaner strips what matters)
    # plus GitHub tables and strikethrough. Rendering keeps no state between
    # calls, so one instance serves every thread.
    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def _html_to_text(html: str) -> str:
    """Text of an HTML document with block structure kept as line breaks.

    Walks the tree with an explicit stack (deeply nested pages would exceed the
    recursion limit). Source whitespace collapses to one space, as a browser
    renders it, except inside ``<pre>``; breaks requested by block elements are
    merged so that nested blocks give one break, not several.
    """
    soup = _parse(html)
    out: list[str] = []
    pending = 0  # newlines owed before the next visible text

    def request_break(count: int) -> None:
        nonlocal pending
        pending = max(pending, count)

    # Stack items: (node, inside <pre>) or an int, a break to request on exit.
    stack: list[tuple[object, bool] | int] = [(child, False) for child in reversed(soup.contents)]
    while stack:
        item = stack.pop()
        if isinstance(item, int):
            request_break(item)
            continue
        node, in_pre = item
        if isinstance(node, NavigableString):
            if isinstance(node, _SKIPPED_STRINGS):
                continue
            text = str(node) if in_pre else _HTML_WS_RE.sub(" ", str(node))
            if not text.strip():
                # Whitespace between tags must not consume a pending break.
                if text and out:
                    out.append(" ")
                continue
            if pending and out:
                out.append("\n" * pending)
            pending = 0
            out.append(text)
            continue
        if not isinstance(node, Tag):
            continue
        name = node.name.lower()
        if name in _DROP:
            continue
        if name == "img":
            alt = node.get("alt")
            if isinstance(alt, str) and alt.strip():
                stack.append((NavigableString(alt), in_pre))
            continue
        breaks = 2 if name in _PARAGRAPH else 1 if name in _LINE else 0
        if breaks:
            request_break(breaks)
            stack.append(breaks)
        elif name in _CELL and out:
            out.append(" ")  # keep adjacent cells' words apart
        child_pre = in_pre or name == "pre"
        stack.extend((child, child_pre) for child in reversed(node.contents))
    return "".join(out)
