"""Highlighted snippets: HTML-escaped passage text with query terms in ``<mark>``.

A word matches when the analyser (``search.text.analyze``, the one BM25 uses)
turns it into a query token, so "Nosebleeds" is marked for "nosebleed" and
stopwords never are. Han text has no word boundaries to test one by one: each
Chinese query token is looked up in the passage (after the same Traditional ->
Simplified folding the analyser does). The snippet is cut around the first
match.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Callable, Iterable

from search.text import analyze
from search.text.analyze import HAN

SNIPPET_CHARS = 300
LEAD_CHARS = 80  # context kept before the first match
ELLIPSIS = "…"
_WORD_RE = re.compile(f"([{HAN}]+)|((?:[^\\W_{HAN}])+)")
_HAN_RE = re.compile(f"[{HAN}]")
_SPACE_RE = re.compile(r"\s+")


@functools.lru_cache(maxsize=65536)
def _word_tokens(word: str) -> frozenset[str]:
    return frozenset(analyze(word))


@functools.cache
def _to_simplified() -> Callable[[str], str]:
    from opencc import OpenCC

    convert: Callable[[str], str] = OpenCC("t2s").convert
    return convert


def _han_spans(run: str, offset: int, terms: Iterable[str]) -> list[tuple[int, int]]:
    simplified = _to_simplified()(run)
    if len(simplified) != len(run):
        simplified = run  # a phrase conversion changed the length: offsets would drift
    spans = []
    for term in terms:
        start = simplified.find(term)
        while start != -1:
            spans.append((offset + start, offset + start + len(term)))
            start = simplified.find(term, start + 1)
    return spans


@functools.lru_cache(maxsize=4096)
def _query_terms(query: str) -> tuple[frozenset[str], tuple[str, ...], frozenset[str]]:
    terms = frozenset(analyze(query))
    # Stemming only rewrites word endings, so an ASCII word whose first two
    # letters start no query token cannot match: skip analysing it.
    prefixes = frozenset(t[:2] for t in terms if t.isascii())
    return terms, tuple(t for t in terms if _HAN_RE.search(t)), prefixes


def match_spans(
    text: str, query: str, lo: int = 0, hi: int | None = None, *, first_only: bool = False
) -> list[tuple[int, int]]:
    """Character spans of ``text[lo:hi]`` that match a query token, sorted and merged.

    ``first_only`` stops at the first matching word: a snippet needs its first
    match to place the window, and only the window's matches after that, so
    long passages are not analysed word by word past what is shown.
    """
    terms, han_terms, prefixes = _query_terms(query)
    if not terms:
        return []
    spans: list[tuple[int, int]] = []
    for match in _WORD_RE.finditer(text, lo, len(text) if hi is None else hi):
        if match.group(1):
            if han_terms:
                spans += _han_spans(match.group(1), match.start(), han_terms)
        else:
            word = match.group(2)
            if word.isascii() and word[:2].lower() not in prefixes:
                continue
            if _word_tokens(word) & terms:
                spans.append(match.span())
        if first_only and spans:
            break
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _window(text: str, first: int, size: int) -> tuple[int, int]:
    """About ``size`` characters around ``first``, cut at whitespace where there is some."""
    start = max(0, first - LEAD_CHARS)
    if start > 0:
        space = text.find(" ", start, first)
        start = space + 1 if space != -1 else start
    end = min(len(text), start + size)
    if end < len(text):
        space = text.rfind(" ", max(first, start + size // 2), end)
        end = space if space != -1 else end
    return start, end


def snippet(text: str, query: str, size: int = SNIPPET_CHARS) -> str:
    """The passage around its first match, HTML-escaped, matches wrapped in ``<mark>``."""
    first = match_spans(text, query, first_only=True)
    start, end = _window(text, first[0][0] if first else 0, size)
    spans = match_spans(text, query, start, end) if first else []
    parts = [ELLIPSIS] if start > 0 else []
    cursor = start
    for lo, hi in spans:
        lo, hi = max(lo, start), min(hi, end)
        if lo >= hi:
            continue
        parts.append(_plain(text[cursor:lo]))
        parts.append(f"<mark>{_plain(text[lo:hi])}</mark>")
        cursor = hi
    parts.append(_plain(text[cursor:end]))
    if end < len(text):
        parts.append(ELLIPSIS)
    return "".join(parts).strip()


def _plain(piece: str) -> str:
    return html.escape(_SPACE_RE.sub(" ", piece), quote=True)
