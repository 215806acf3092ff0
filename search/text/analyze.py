"""The one text analyser of Sieve, used at index time and at query time.

Both BM25 engines (tantivy and Elasticsearch) index the tokens produced here
verbatim, whitespace separated, so a query matches a document exactly when
both went through this module. Any change to its output is an index format
change: raise ``ANALYSIS_VERSION`` and re-index after touching the rules below.

Latin and other space-separated scripts: NFKC, casefold, accent folding,
split on non-alphanumerics, English stopwords, Porter stemming. Chinese:
Traditional -> Simplified (OpenCC t2s), then jieba's search-engine mode, then
the Chinese stop words of ``stopwords_zh.txt`` (Simplified and Traditional).
Mixed text is split into Han runs and the rest, each analysed by its rules,
in order.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
import unicodedata
from collections.abc import Callable
from importlib import resources
from typing import Any

import Stemmer

# Han ideographs (unified, extension A, compatibility, extensions B and later).
HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
KANA = "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"
HANGUL = "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"
# The generic diacritics that NFKD splits off Latin, Greek and Cyrillic letters.
# Only these are folded away: stripping every combining mark would mangle
# scripts such as Devanagari, whose vowel signs are marks too.
DIACRITICS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"


def _mark_class() -> str:
    """Every combining mark of the BMP as a regex class body (~10 ms, once).

    Python's ``\\w`` excludes marks, so without them "हिन्दी" or a decomposed
    accent would split a word in two.
    """
    ranges: list[tuple[int, int]] = []
    for code in range(0x10000):
        if unicodedata.category(chr(code))[0] == "M":
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    return "".join(f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges)


MARKS = _mark_class()
# Group 1: a run of Han ideographs; group 2: a word of any other script.
_TOKEN_RE = re.compile(f"([{HAN}]+)|((?:[^\\W_{HAN}]|[{MARKS}])+)")
_ASCII_TOKEN_RE = re.compile(r"[a-z0-9]+")
_DIACRITIC_RE = re.compile(f"[{DIACRITICS}]")
_CJK_RE = re.compile(f"[{HAN}{KANA}{HANGUL}]")
_HAN_RE = re.compile(f"[{HAN}]")
_LETTER_RE = re.compile(r"[^\W\d_]")
# Letters NFKD does not decompose; folded as Lucene's ASCIIFoldingFilter does.
_FOLD = str.maketrans({"ø": "o", "æ": "ae", "œ": "oe", "ł": "l", "đ": "d", "ð": "d", "þ": "th"})

# Longer "words" are base64, minified code or hashes longer than SHA-256 hex:
# noise for BM25, and tantivy rejects very long terms.
MAX_TOKEN_CHARS = 64

# Lucene's English list plus pronouns, auxiliaries and the "s"/"t" left by
# splitting "it's"/"don't". Words that carry some meaning in a query (more,
# after, between, up, over, ...) are deliberately kept. Single letters such as
# the "c" of "vitamin c" or "b" of "hepatitis b" are kept as tokens.
ENGLISH_STOPWORDS: frozenset[str] = frozenset(
    """
    a about am an and any are as at be because been being both but by can could
    did do does doing each for from further had has have having he her here hers
    herself him himself his how i if in into is it its itself just me my myself
    no nor not of on once only or other our ours ourselves own same she should so
    some such than that the their theirs them themselves then there these they
    this those through to too until very was we were what when where which while
    who whom why will with would you your yours yourself yourselves s t
    """.split()
)

# Particles, pronouns, question words and other function words that jieba
# emits as tokens of their own (the list and why: stopwords_zh.txt, Simplified
# only). Han runs are converted to Simplified before segmentation, so the
# Simplified forms are what the filter meets; their Traditional forms are
# added on first use (``_with_traditional``) for tokens that t2s leaves as
# they are. A single character not in the list (茶, 锅, 猫) is a word and kept.
STOPWORDS_ZH_FILE = "stopwords_zh.txt"


def load_chinese_stopwords(name: str = STOPWORDS_ZH_FILE) -> frozenset[str]:
    """The words of a stop-word file shipped in this package ("#" comments, one per line)."""
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return frozenset(line for line in lines if line)


CHINESE_STOPWORDS: frozenset[str] = load_chinese_stopwords()

# Raise by one with any change to the rules of this module that changes its
# tokens (a pattern, folding, MAX_TOKEN_CHARS, the stemmer): an index built with
# the old tokens no longer matches queries analysed with the new ones. The stop
# words and the libraries that segment, convert and stem count by themselves
# (``analysis_version``).
ANALYSIS_VERSION = 1
# The packages whose releases may change tokens: segmentation, t2s, stemming.
_ANALYSIS_PACKAGES = ("jieba", "opencc-python-reimplemented", "PyStemmer")


def analysis_version(
    version: int = ANALYSIS_VERSION,
    english: frozenset[str] = ENGLISH_STOPWORDS,
    chinese: frozenset[str] = CHINESE_STOPWORDS,
) -> str:
    """A short hash that changes whenever the default analyser's tokens may change.

    It covers ``ANALYSIS_VERSION``, both stop-word lists (the words, so an edited
    comment in ``stopwords_zh.txt`` does not count) and the installed versions of
    the packages in ``_ANALYSIS_PACKAGES``. Anything that keeps analysed tokens
    across runs (the evaluation index cache) keys them by it.
    """
    from importlib import metadata

    digest = hashlib.sha256(f"analysis {version}\n".encode())
    for words in (english, chinese):
        digest.update("\n".join(sorted(words)).encode() + b"\n--\n")
    for package in _ANALYSIS_PACKAGES:
        try:
            installed = metadata.version(package)
        except metadata.PackageNotFoundError:
            installed = "missing"
        digest.update(f"{package}=={installed}\n".encode())
    return f"{version}-{digest.hexdigest()[:12]}"


_init_lock = threading.Lock()
# (t2s converter, segmenter, Simplified -> Traditional converters)
_Backend = tuple[Callable[[str], str], Callable[[str], list[str]], list[Callable[[str], str]]]
_chinese: _Backend | None = None
_local = threading.local()


def _chinese_backend() -> _Backend:
    """(t2s converter, segmenter, s2t converters), built once on first use under a lock.

    jieba takes ~0.7 s to build its prefix dictionary, so importing this module
    stays cheap and only Chinese text pays. Its progress messages are silenced.
    """
    global _chinese
    if _chinese is None:
        with _init_lock:
            if _chinese is None:
                import jieba
                from opencc import OpenCC

                jieba.setLogLevel(logging.WARNING)
                jieba.initialize()
                converter = OpenCC("t2s")  # loads its dictionaries in the constructor
                # The Traditional variants a stop word may be written in:
                # generic, Taiwan and Hong Kong standard characters.
                to_traditional = [OpenCC(c).convert for c in ("s2t", "s2tw", "s2hk")]
                # Search mode adds the dictionary sub-words of long words
                # ("中华人民共和国" also yields 中华, 人民, 共和国), so a query
                # naming a part finds the whole, whichever way either side
                # was segmented.
                _chinese = (converter.convert, jieba.lcut_for_search, to_traditional)
    return _chinese


def warm_up() -> None:
    """Load the Chinese dictionary (jieba, OpenCC) and the stop-word forms now.

    ``search.warmup`` calls this at start-up so that no query pays the ~0.7 s
    build; without it the first text with Han characters does.
    """
    _chinese_backend()
    _with_traditional(CHINESE_STOPWORDS)


def needs_dictionary(text: str) -> bool:
    """Whether analysing ``text`` uses the Chinese dictionary (it holds Han characters)."""
    if text.isascii():
        return False
    return _HAN_RE.search(unicodedata.normalize("NFKC", text)) is not None


@functools.lru_cache(maxsize=8)
def _with_traditional(words: frozenset[str]) -> frozenset[str]:
    """``words`` plus their Traditional forms and those forms' t2s images.

    Most Traditional forms convert back to the listed word before the filter
    sees them, but not all (s2tw writes the particle 着 as 著, which t2s keeps,
    since 著 is also a Simplified character), so every form is matched.
    """
    convert, _, to_traditional = _chinese_backend()
    forms = {variant(word) for word in words for variant in to_traditional}
    return words | forms | {convert(form) for form in forms}


def _stemmer() -> Any:
    """This thread's Porter stemmer: PyStemmer instances must not be shared across threads."""
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = Stemmer.Stemmer("porter")
    return stemmer


@functools.lru_cache(maxsize=8192)
def _segment_han(run: str) -> tuple[str, ...]:
    """Segment one run of Han ideographs (cached: query and title runs repeat)."""
    convert, cut, _ = _chinese_backend()
    return tuple(cut(convert(run)))


def _fold(word: str) -> str:
    """Strip Latin diacritics: "café" -> "cafe", "naïve" -> "naive"."""
    decomposed = unicodedata.normalize("NFKD", word)
    folded = _DIACRITIC_RE.sub("", decomposed).translate(_FOLD)
    # Recompose what was not folded (Hangul syllables, Indic clusters).
    return unicodedata.normalize("NFC", folded)


class Analyzer:
    """Text -> BM25 tokens. Cheap to build; all heavy state is shared and lazy."""

    def __init__(
        self,
        *,
        stem: bool = True,
        stopwords: frozenset[str] = ENGLISH_STOPWORDS,
        chinese_stopwords: frozenset[str] = CHINESE_STOPWORDS,
    ) -> None:
        self.stem = stem
        self.stopwords = stopwords
        self.chinese_stopwords = chinese_stopwords

    def analyze(self, text: str) -> list[str]:
        """Tokens of ``text`` in order. Deterministic; never raises on a str."""
        if not text:
            return []
        if text.isascii():
            # Fast path (most English text): no normalisation, no Han runs.
            return self._finish_words(_ASCII_TOKEN_RE.findall(text.lower()))
        text = unicodedata.normalize("NFKC", text).casefold()
        tokens: list[str] = []
        words: list[str] = []
        for match in _TOKEN_RE.finditer(text):
            han, word = match.group(1), match.group(2)
            if han:
                # Flush the pending words first to keep document order.
                tokens += self._finish_words(words)
                words = []
                stop = _with_traditional(self.chinese_stopwords)
                tokens += [t for t in _segment_han(han) if t not in stop]
            else:
                words.append(word if word.isascii() else _fold(word))
        tokens += self._finish_words(words)
        return tokens

    def _finish_words(self, words: list[str]) -> list[str]:
        """Drop stopwords and over-long words, then stem the ASCII ones."""
        stop = self.stopwords
        # A word of lone diacritics folds to "": never emit an empty token.
        kept = [w for w in words if w and w not in stop and len(w) <= MAX_TOKEN_CHARS]
        if not self.stem or not kept:
            return kept
        stemmer = _stemmer()
        if all(w.isascii() for w in kept):
            return list(stemmer.stemWords(kept))
        # Porter knows only English; other scripts pass through unchanged.
        return [stemmer.stemWord(w) if w.isascii() else w for w in kept]


_default = Analyzer()


def analyze(text: str) -> list[str]:
    """Tokens of ``text`` with the default analyser (the one both BM25 indexes use)."""
    return _default.analyze(text)


def script_of(text: str) -> str:
    """The script of ``text``: "cjk", "latin" or "other".

    "cjk" when at least 30% of the letters are Han, kana or Hangul; "other"
    when there are no letters at all; "latin" otherwise. "latin" stands for
    every non-CJK script; callers use this to decide whether an English-only
    embedder can serve a query.
    """
    letters = len(_LETTER_RE.findall(text))
    if letters == 0:
        return "other"
    cjk = len(_CJK_RE.findall(text))
    return "cjk" if cjk >= 0.3 * letters else "latin"
