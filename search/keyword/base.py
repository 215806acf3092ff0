"""The BM25 leg's contract. Implementations: tantivy (embedded), Elasticsearch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

from search.store import UpsertResult
from search.types import Chunk, Filters, ScoredChunk


@runtime_checkable
class KeywordIndex(Protocol):
    """A BM25 index over pre-analysed tokens.

    Text analysis happens once, in ``search.text.analyze``; implementations
    index the analyser's tokens verbatim (whitespace-separated) so that both
    engines score the same terms. Every chunk's ``facets`` are indexed as
    untokenised keywords for filtering. Writes follow the version rule of
    ``upsert``: an older write is refused and reported, never applied.
    """

    name: str

    def upsert(self, chunks: Sequence[Chunk], tokens: Sequence[Sequence[str]]) -> UpsertResult:
        """Replace every chunk of the documents in ``chunks`` with ``chunks``.

        ``tokens[i]`` are the analysed tokens of ``chunks[i]``. A document's
        old chunks (including ones beyond the new chunk count) are removed in
        the same operation, so the index never shows a mix of two versions.

        The version rule (``search.store``): a document whose stored version
        is newer than its chunks' ``version`` is refused, named in the
        result's ``refused`` with both versions, and left exactly as it was; a
        write is never applied in part. The stored version written again is
        an idempotent rewrite (a replay duplicates nothing). ``ValueError``
        when ``tokens`` does not match ``chunks`` or a document comes at two
        versions in one write.
        """
        ...

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """Remove every chunk of these documents. Unknown ids are ignored."""
        ...

    def search(
        self, tokens: Sequence[str], top_k: int, filters: Filters | None = None
    ) -> list[ScoredChunk]:
        """BM25 (k1=1.2, b=0.75) over ``tokens`` as an OR query, best first.

        Filters are applied inside the search. An empty token list returns [].
        """
        ...

    def count(self) -> int:
        """Number of chunks stored."""
        ...

    def doc_versions(self) -> dict[str, int]:
        """Every document id in the index with the version its chunks carry."""
        ...

    def iter_chunks(self) -> Iterator[Chunk]:
        """Every stored chunk as written (doc id, version, title, text, offsets, metadata).

        In no particular order; what ``search.recover`` rebuilds a lost registry from.
        """
        ...

    def clear(self) -> None:
        """Remove everything (used by rebuilds and tests)."""
        ...

    def close(self) -> None:
        """Release files and connections."""
        ...
