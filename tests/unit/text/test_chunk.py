"""Token counting, sentence splitting and chunking with overlap."""

from __future__ import annotations

import random

import pytest

from search.text import chunk_text, count_tokens, make_chunks, split_sentences
from search.types import chunk_id

pytestmark = pytest.mark.unit


def sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in split_sentences(text)]


def check_invariants(text: str, spans: list[tuple[int, int]], max_tokens: int) -> None:
    """Ordered, non-empty, within max_tokens, covering every non-whitespace character."""
    covered = [False] * len(text)
    nexts: list[tuple[int, int] | None] = [*spans[1:], None]
    for (s, e), nxt in zip(spans, nexts[: len(spans)], strict=True):
        chunk = text[s:e]
        assert chunk and chunk == chunk.strip()
        assert count_tokens(chunk) <= max_tokens
        if nxt is not None:
            assert nxt[0] > s and nxt[1] > e
        for i in range(s, e):
            covered[i] = True
    assert all(covered[i] or text[i].isspace() for i in range(len(text)))


def test_count_tokens():
    assert count_tokens("") == 0
    assert count_tokens("Hello, world! 3.5 covid-19") == 6
    assert count_tokens("机器学习") == 4
    assert count_tokens("BERT模型。") == 3
    assert count_tokens("... --- !!!") == 0


def test_split_sentences_basic_and_exact_offsets():
    text = "  First one. Second one!  Third?\nStill third.\n\n\nNew paragraph"
    spans = split_sentences(text)
    assert [text[s:e] for s, e in spans] == [
        "First one.",
        "Second one!",
        "Third?",
        "Still third.",
        "New paragraph",
    ]


def test_abbreviations_and_decimals_do_not_split():
    text = (
        "Dr. Smith et al. measured 3.5 mg, e.g. in Fig. 2 and i.e. here. "
        "J. R. Tolkien wrote it. The U.S. Army came."
    )
    assert sentences(text) == [
        "Dr. Smith et al. measured 3.5 mg, e.g. in Fig. 2 and i.e. here.",
        "J. R. Tolkien wrote it.",
        "The U.S. Army came.",
    ]


def test_closing_quotes_stay_with_their_sentence():
    assert sentences('He said "stop." Then (he left.) Next') == [
        'He said "stop."',
        "Then (he left.)",
        "Next",
    ]


def test_cjk_sentences_split_without_spaces():
    text = "深度學習很有用。研究人員正在探索！效果如何？很好；“真的。”然后"
    assert sentences(text) == [
        "深度學習很有用。",
        "研究人員正在探索！",
        "效果如何？",
        "很好；",
        "“真的。”",
        "然后",
    ]


def test_paragraph_break_splits_without_punctuation():
    assert sentences("Heading\n\nBody text\nmore body") == ["Heading", "Body text\nmore body"]


def test_chunks_pack_whole_sentences_with_overlap():
    text = " ".join(f"Sentence number {i} has six tokens." for i in range(10))
    spans = chunk_text(text, max_tokens=20, overlap=8)
    chunks = [text[s:e] for s, e in spans]
    # 6 tokens per sentence: 3 fit in 20; one (6 <= 8) is repeated as overlap.
    assert chunks[0] == (
        "Sentence number 0 has six tokens. Sentence number 1 has six tokens. "
        "Sentence number 2 has six tokens."
    )
    assert chunks[1].startswith("Sentence number 2 has six tokens. Sentence number 3")
    for (_, e1), (s2, _) in zip(spans, spans[1:], strict=False):
        assert s2 < e1  # consecutive chunks overlap
        assert text[s2:e1].endswith(".")  # and the overlap is whole sentences
    check_invariants(text, spans, 20)


def test_no_overlap_when_last_sentence_too_long_for_it():
    text = "Tiny one. " + "This sentence has quite a lot of words in it today. " * 3
    spans = chunk_text(text, max_tokens=12, overlap=4)
    for (_, e1), (s2, _) in zip(spans, spans[1:], strict=False):
        assert s2 >= e1
    check_invariants(text, spans, 12)


def test_zero_overlap():
    text = "One two three. Four five six. Seven eight nine."
    assert [text[s:e] for s, e in chunk_text(text, max_tokens=6, overlap=0)] == [
        "One two three. Four five six.",
        "Seven eight nine.",
    ]


def test_long_sentence_is_split_into_overlapping_windows():
    words = [f"w{i}" for i in range(25)]
    text = "Intro here. " + ", ".join(words) + ". Outro here."
    spans = chunk_text(text, max_tokens=10, overlap=3)
    chunks = [text[s:e] for s, e in spans]
    assert chunks[0] == "Intro here."
    assert chunks[1] == "w0, w1, w2, w3, w4, w5, w6, w7, w8, w9,"
    assert chunks[2].startswith("w7, w8, w9, w10,")  # 3 tokens of overlap
    assert chunks[-1] == "Outro here."
    check_invariants(text, spans, 10)


def test_cjk_text_without_spaces_is_chunked_by_characters():
    text = "机器学习是人工智能的一个分支" * 20  # one 280-character "sentence"
    spans = chunk_text(text, max_tokens=50, overlap=10)
    assert len(spans) == 7  # windows start every 40 characters
    assert all(e - s <= 50 for s, e in spans)
    assert spans[1][0] == 40 and spans[0][1] == 50
    check_invariants(text, spans, 50)


def test_empty_and_whitespace_text():
    assert chunk_text("") == []
    assert chunk_text("  \n\n \t ") == []
    assert make_chunks("d", "   ") == []


def test_punctuation_only_text_is_one_chunk():
    assert chunk_text("*** --- ***") == [(0, 11)]


def test_invalid_sizes():
    with pytest.raises(ValueError):
        chunk_text("x", max_tokens=10, overlap=10)
    with pytest.raises(ValueError):
        chunk_text("x", max_tokens=0, overlap=0)


def test_make_chunks_builds_chunks_with_stable_ids():
    text = "Alpha beta gamma. Delta epsilon zeta. Eta theta iota."
    meta = {"lang": "en", "tags": ["a", "b"], "nested": {"x": 1}}
    chunks = make_chunks(
        "doc-1", text, title="T", version=3, metadata=meta, max_tokens=6, overlap=3
    )
    assert [c.ordinal for c in chunks] == [0, 1]
    for c in chunks:
        assert c.text == text[c.start : c.end]
        assert c.id == chunk_id("doc-1", c.ordinal)
        assert c.doc_id == "doc-1" and c.title == "T" and c.version == 3
        assert c.facets == ("lang=en", "tags=a", "tags=b")
        assert c.metadata == meta
    again = make_chunks("doc-1", text, title="T", version=3, metadata=meta, max_tokens=6, overlap=3)
    assert [c.id for c in again] == [c.id for c in chunks]
    other = make_chunks("doc-2", text, max_tokens=6, overlap=3)
    assert not {c.id for c in other} & {c.id for c in chunks}
    assert other[0].facets == () and other[0].metadata == {}


def test_properties_on_random_documents():
    rng = random.Random(1234)
    vocab = ["alpha", "beta", "3.5", "e.g.", "Dr.", "机器", "学习", "模型", "x", "covid-19", "—"]
    enders = [". ", "! ", "? ", "。", "\n\n", " ", " ", " ", ", "]
    for _ in range(200):
        text = "".join(rng.choice(vocab) + rng.choice(enders) for _ in range(rng.randint(0, 120)))
        max_tokens = rng.randint(1, 40)
        overlap = rng.randint(0, max_tokens - 1)
        spans = chunk_text(text, max_tokens=max_tokens, overlap=overlap)
        assert spans == chunk_text(text, max_tokens=max_tokens, overlap=overlap)
        check_invariants(text, spans, max_tokens)
        for s, e in split_sentences(text):
            assert text[s:e] == text[s:e].strip() and s < e
