"""Split cleaned text into overlapping, sentence-aligned chunks.

Sizes are counted in analyser-independent tokens (``count_tokens``): a run of
letters/digits is one token and each Han or kana character is one, so Chinese
text without spaces is sized sensibly. Every span is a pair of character
offsets into the text given, so ``text[start:end]`` is always the chunk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from search.text.analyze import HAN, KANA, MARKS
from search.types import Chunk, chunk_id, facet_terms

# One token: a Han or kana character, or a run of other word characters
# (Latin, digits, Hangul, Cyrillic... with their combining marks).
_TOKEN_RE = re.compile(f"[{HAN}{KANA}]|(?:[^\\W_{HAN}{KANA}]|[{MARKS}])+")
# A blank line (only spaces between two newlines) ends a paragraph.
_PARAGRAPH_RE = re.compile(r"\n[^\S\n]*\n")
_CLOSERS = "\"'”’)\\]}」』》】〉）"
# CJK enders end a sentence on their own; Latin ones only before whitespace,
# which keeps decimals (3.5), URLs and "e.g.," in one piece.
_BOUNDARY_RE = re.compile(f"[。！？；][{_CLOSERS}]*|[.!?]+[{_CLOSERS}]*(?=\\s|$)")
_LAST_WORD_RE = re.compile(r"(\S+)$")
_OPENERS = "\"'“‘([{"
# Words whose trailing period is not a sentence end (compared lowercased,
# without the final period). Single letters (initials: "J. Smith") count too.
ABBREVIATIONS: frozenset[str] = frozenset(
    """e.g i.e cf vs viz al fig figs eq eqs ref refs tab suppl sec ch vol vols no nos
    pp approx ca resp dr mr mrs ms prof sr jr st mt dept inc ltd co corp ed eds
    u.s u.k a.m p.m jan feb mar apr jun jul aug sep sept oct nov dec""".split()
)


class _Unit(NamedTuple):
    start: int
    end: int
    tokens: int


def count_tokens(text: str) -> int:
    """Tokens in ``text``: word runs count one, Han/kana characters one each."""
    return len(_TOKEN_RE.findall(text))


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans ``(start, end)`` of ``text``, whitespace stripped, in order."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for match in _PARAGRAPH_RE.finditer(text):
        _split_paragraph(text, pos, match.start(), spans)
        pos = match.end()
    _split_paragraph(text, pos, len(text), spans)
    return spans


def _split_paragraph(text: str, lo: int, hi: int, spans: list[tuple[int, int]]) -> None:
    start = lo
    for match in _BOUNDARY_RE.finditer(text, lo, hi):
        if match.group().rstrip(_CLOSERS) == "." and _is_abbreviation(text, lo, match.start()):
            continue
        _add_span(text, start, match.end(), spans)
        start = match.end()
    _add_span(text, start, hi, spans)


def _is_abbreviation(text: str, lo: int, period: int) -> bool:
    """Whether the word just before the period at ``period`` is an abbreviation."""
    found = _LAST_WORD_RE.search(text, max(lo, period - 32), period)
    if not found:
        return False
    word = found.group(1).lstrip(_OPENERS).lower()
    return word in ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def _add_span(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start < end:
        spans.append((start, end))


def chunk_text(text: str, max_tokens: int = 200, overlap: int = 40) -> list[tuple[int, int]]:
    """Chunk spans ``(start, end)`` of ``text``: whole sentences, with overlap.

    Sentences are packed greedily up to ``max_tokens``. Each chunk after the
    first repeats the trailing sentences of the previous one, at most
    ``overlap`` tokens of them (none if the last sentence alone is longer).
    A sentence longer than ``max_tokens`` becomes chunks of its own, cut at
    token boundaries into windows of ``max_tokens`` overlapping by
    ``overlap`` tokens; it shares no sentence overlap with its neighbours.
    Every chunk has at most ``max_tokens`` tokens and every non-whitespace
    character is in some chunk.
    """
    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise ValueError(
            f"need max_tokens >= 1 and 0 <= overlap < max_tokens, got {max_tokens} and {overlap}"
        )
    chunks: list[tuple[int, int]] = []
    current: list[_Unit] = []
    total = 0
    for start, end in split_sentences(text):
        unit = _Unit(start, end, len(_TOKEN_RE.findall(text, start, end)))
        if unit.tokens > max_tokens:
            if current:
                chunks.append((current[0].start, current[-1].end))
            chunks += _windows(text, start, end, max_tokens, overlap)
            current, total = [], 0
            continue
        if current and total + unit.tokens > max_tokens:
            chunks.append((current[0].start, current[-1].end))
            current = _overlap_tail(current, overlap, max_tokens - unit.tokens)
            total = sum(u.tokens for u in current)
        current.append(unit)
        total += unit.tokens
    if current:
        chunks.append((current[0].start, current[-1].end))
    return chunks


def _overlap_tail(units: list[_Unit], overlap: int, room: int) -> list[_Unit]:
    """The trailing sentences of ``units`` to repeat: within ``overlap`` and ``room``."""
    budget = min(overlap, room)
    tail: list[_Unit] = []
    used = 0
    for unit in reversed(units[1:]):  # never the whole chunk: the next must add something
        if used + unit.tokens > budget:
            break
        tail.append(unit)
        used += unit.tokens
    tail.reverse()
    return tail


def _windows(text: str, start: int, end: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Cut one over-long sentence into windows of ``size`` tokens.

    A window runs from its first token to just before the first token of the
    next window's remainder, so punctuation between tokens stays covered even
    without overlap.
    """
    tokens = [m.span() for m in _TOKEN_RE.finditer(text, start, end)]
    spans: list[tuple[int, int]] = []
    step = size - overlap
    first = 0
    while True:
        last = min(first + size, len(tokens))  # exclusive
        lo = start if first == 0 else tokens[first][0]
        hi = end if last == len(tokens) else tokens[last][0]
        while hi > lo and text[hi - 1].isspace():
            hi -= 1
        spans.append((lo, hi))
        if last == len(tokens):
            return spans
        first += step


def make_chunks(
    doc_id: str,
    text: str,
    *,
    title: str = "",
    version: int = 1,
    metadata: Mapping[str, Any] | None = None,
    max_tokens: int = 200,
    overlap: int = 40,
) -> list[Chunk]:
    """The chunks of one cleaned document, with stable ids ``chunk_id(doc_id, ordinal)``."""
    meta = dict(metadata) if metadata else {}
    facets = tuple(facet_terms(meta))
    return [
        Chunk(
            id=chunk_id(doc_id, ordinal),
            doc_id=doc_id,
            ordinal=ordinal,
            text=text[start:end],
            start=start,
            end=end,
            title=title,
            version=version,
            facets=facets,
            metadata=meta,
        )
        for ordinal, (start, end) in enumerate(chunk_text(text, max_tokens, overlap))
    ]
