"""clean_text / html_title: HTML, Markdown and plain text to clean plain text."""

from __future__ import annotations

import pytest

from search.errors import InvalidRequest
from search.text import clean_text, html_title
from search.text.clean import page_text

pytestmark = pytest.mark.unit

PAGE = """<!DOCTYPE html>
<html><head><title>My  Page</title><style>p { color: red }</style>
<script>var secret = 1;</script></head>
<body>
<h1>Main &amp; heading</h1>
<!-- hidden comment -->
<p>First   paragraph
   with <b>bold</b> and&nbsp;entities &lt;tag&gt; caf&eacute; &#8212; done.</p>
<ul>
  <li>One</li>
  <li>Two
    <ul><li>Two-A</li><li>Two-B</li></ul>
  </li>
  <li>Three</li>
</ul>
<noscript>enable javascript</noscript>
<template><p>template text</p></template>
<table><tr><td>a</td><td>b</td></tr><tr><th>c</th><td>d</td></tr></table>
<div><div><p>Nested</p></div></div>tail<br>after break
<pre>x = 1
y  =  2</pre>
<p><img src="cat.png" alt="A cat"> sits.</p>
</body></html>"""


def test_html_drops_non_content_and_keeps_structure():
    # The renderer on a whole page (main-content extraction: test_extract.py).
    assert page_text(PAGE) == (
        "Main & heading\n\n"
        "First paragraph with bold and entities <tag> café \u2014 done.\n\n"
        "One\nTwo\nTwo-A\nTwo-B\nThree\n\n"
        "a b\nc d\n\n"
        "Nested\n\n"
        "tail\nafter break\n\n"
        "x = 1\ny = 2\n\n"
        "A cat sits."
    )


def test_html_title_prefers_title_then_h1():
    assert html_title(PAGE) == "My Page"
    assert html_title("<body><h1>Only <i>heading</i></h1><h1>second</h1></body>") == "Only heading"
    assert html_title("<p>no title</p>") == ""


def test_html_inline_elements_do_not_break_lines():
    assert clean_text("<p>a <em>b</em><strong>c</strong> <a href='x'>d</a></p>", "html") == "a bc d"


def test_malformed_markup_does_not_raise():
    # html.parser rejects a broken "<![" section; it is kept as text instead.
    assert clean_text("a <![ b <p>c</p>", "html") == "a <![ b\n\nc"


def test_deeply_nested_html_does_not_recurse():
    html = "<div>" * 5000 + "deep" + "</div>" * 5000
    assert clean_text(html, "html") == "deep"


MARKDOWN = """# Title

Some *emphasis*, **strong** and `code` with a [link text](http://example.com/x)
and ![alt words](img.png).

```python
def f(x):
    return x  # comment
```

- item one
- item two
  - nested item

| h1 | h2 |
|----|----|
| c1 | c2 |

## Sub heading
Paragraph <script>alert(1)</script> end.
"""


def test_markdown_renders_to_text():
    assert clean_text(MARKDOWN, "markdown") == (
        "Title\n\n"
        # A soft line break inside a paragraph is just a space in HTML.
        "Some emphasis, strong and code with a link text and alt words.\n\n"
        "def f(x):\nreturn x # comment\n\n"
        "item one\nitem two\nnested item\n\n"
        "h1 h2\nc1 c2\n\n"
        "Sub heading\n\n"
        "Paragraph end."
    )


def test_plain_text_normalisation():
    raw = "  a\t\t b  \r\n\r\n\r\n\n\n c\x00d\u200b e\u0301 \x07\n  next line  \n\n\n"
    # NFC composes e + U+0301; controls and zero-width space vanish; 3+ newlines -> 2.
    assert clean_text(raw) == "a b\n\ncd \u00e9\nnext line"


def test_plain_text_keeps_single_and_double_newlines():
    assert clean_text("one\ntwo\n\nthree") == "one\ntwo\n\nthree"


@pytest.mark.parametrize("content_type", ["text", "markdown", "html"])
def test_empty_and_whitespace_input(content_type):
    assert clean_text("", content_type) == ""
    assert clean_text(" \n\t \n ", content_type) == ""


def test_unknown_content_type_names_valid_options():
    with pytest.raises(InvalidRequest) as info:
        clean_text("x", "pdf")
    assert "text" in str(info.value) and "markdown" in str(info.value) and "html" in str(info.value)


def test_output_invariants_on_random_input():
    import random

    rng = random.Random(7)
    alphabet = "ab <>/&;#\n\t\r\x00\x1b\u00a0\u200bé\u0301中。!*_`[]()p"
    for _ in range(300):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        for content_type in ("text", "markdown", "html"):
            out = clean_text(raw, content_type)
            assert out == out.strip()
            assert "\n\n\n" not in out and "  " not in out and "\t" not in out
            assert not any(ord(c) < 32 and c != "\n" for c in out)
            assert clean_text(raw, content_type) == out  # deterministic
