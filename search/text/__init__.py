"""Text processing: cleaning, the BM25 analyser, and chunking. Pure Python."""

from search.text.analyze import Analyzer, analysis_version, analyze, script_of
from search.text.chunk import chunk_text, count_tokens, make_chunks, split_sentences
from search.text.clean import clean_text, html_title, page_text

__all__ = [
    "Analyzer",
    "analysis_version",
    "analyze",
    "chunk_text",
    "clean_text",
    "count_tokens",
    "html_title",
    "make_chunks",
    "page_text",
    "script_of",
    "split_sentences",
]
