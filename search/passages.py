"""Rerank passages by reference: what the reranker scores for a hit, and how a
reranker in another process reads it from the shared chunk store instead of
receiving its text.

The passage of a hit is its title line and its chunk text (``rerank_passage``:
the one definition, used by the pipeline to score and by a worker to rebuild).
A ``PassageRef`` names it by collection and chunk id and carries a digest of the
exact text the caller would have sent. A reader returns a passage only when
what it read has that digest, so a chunk rewritten between the search and the
rerank, or read from a stale replica, is never scored in place of the text the
pair-score cache will file the score under: the caller sends that one as text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from search.keyword.base import KeywordIndex


@dataclass(frozen=True)
class PassageRef:
    """A passage in a collection's chunk store, and the digest of its exact text."""

    collection: str
    chunk_id: str
    digest: str


def rerank_passage(title: str, text: str) -> tuple[str, int]:
    """The text a hit is reranked with (``title\\ntext``, or the text when untitled),
    and the length of the title prefix (offsets are mapped back past it)."""
    prefix = f"{title}\n" if title else ""
    return prefix + text, len(prefix)


def passage_digest(passage: str) -> str:
    """A short fingerprint of ``passage``'s exact text (blake2b, 16 hex digits)."""
    data = passage.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def passage_ref(collection: str, chunk_id: str, passage: str) -> PassageRef:
    """The reference of ``passage``, the rerank text of chunk ``chunk_id``."""
    return PassageRef(collection, chunk_id, passage_digest(passage))


def read_passages(keyword: KeywordIndex, refs: Sequence[PassageRef]) -> list[str | None]:
    """Each ref's passage as stored in ``keyword``, or None where it is absent or
    differs from the text the ref was made from (the caller then sends the text)."""
    stored = keyword.passages([ref.chunk_id for ref in refs])
    out: list[str | None] = []
    for ref in refs:
        chunk = stored.get(ref.chunk_id)
        passage = None if chunk is None else rerank_passage(chunk.title, chunk.text)[0]
        same = passage is not None and passage_digest(passage) == ref.digest
        out.append(passage if same else None)
    return out
