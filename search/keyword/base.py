"""The BM25 leg's contract. Implementations: tantivy (embedded), Elasticsearch."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from search.store import UpsertResult
from search.types import Chunk, Filters, ScoredChunk

# Chunk ids -> their full hits (ids not among the candidates are left out).
Hydrate = Callable[[Sequence[str]], dict[str, ScoredChunk]]


@dataclass(frozen=True)
class Candidates:
    """A BM25 search's hits by id and score, their passages read only when asked for.

    ``hits`` are best first and carry ``chunk_id``, ``doc_id`` and ``score``
    only (text, title, offsets and metadata empty): fusion and paging need no
    more, and decoding every candidate's stored passage costs more than the
    search itself. ``hydrate`` returns the full hits of the ids asked for, read
    from the same snapshot of the index as ``hits``.
    """

    hits: list[ScoredChunk]
    hydrate: Hydrate


def no_passages(chunk_ids: Sequence[str]) -> dict[str, ScoredChunk]:
    """The ``hydrate`` of a search that found nothing."""
    return {}


def hydrated(found: Candidates) -> list[ScoredChunk]:
    """Every candidate with its passage, in order: what ``KeywordIndex.search`` returns."""
    full = found.hydrate([hit.chunk_id for hit in found.hits])
    return [full[hit.chunk_id] for hit in found.hits]


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
    # True when the index lives in this process (no server to wait on): the
    # pipeline then runs the leg on the calling thread, without a deadline.
    in_process: bool

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
        The same hits as ``hydrated(self.candidates(tokens, top_k, filters))``.
        """
        ...

    def candidates(
        self, tokens: Sequence[str], top_k: int, filters: Filters | None = None
    ) -> Candidates:
        """The hits of ``search`` by id and score, passages decoded on demand.

        What the query pipeline uses: it decodes only the hits it returns or reranks.
        """
        ...

    def passages(self, chunk_ids: Sequence[str]) -> dict[str, ScoredChunk]:
        """The stored chunks of ``chunk_ids`` (score 0.0), by id; unknown ids are absent.

        What a rerank worker reads instead of receiving the passages' text.
        """
        ...

    def count(self) -> int:
        """Number of chunks stored."""
        ...

    def doc_versions(self) -> dict[str, int]:
        """Every document id in the index with the version its chunks carry."""
        ...

    def chunk_versions(self, doc_id: str) -> dict[str, int]:
        """The ids of the chunks stored for one document, each with its version.

        Empty when the index holds none of it; what a document's inspection
        (``search.chunk_presence``) compares with the chunks the registry's text makes.
        """
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
