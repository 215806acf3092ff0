"""The embedded BM25 leg: a tantivy index in a directory of its own.

Tokens arrive already analysed (``search.text.analyze``), so the ``tokens``
field uses tantivy's built-in ``whitespace`` tokenizer: it splits on spaces and
changes nothing else (no lowercasing, no stemming, no length limit), exactly
like the ``sieve_tokens`` analyzer of the Elasticsearch backend.

Queries are built from term queries, never through a query parser, so no token
can be read as query syntax.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import tantivy

from search.errors import BackendUnavailable
from search.types import Chunk, Filters, ScoredChunk, filter_terms, stored_chunk

# tantivy multiplies every term score by (k1 + 1); Lucene (and so Elasticsearch)
# dropped that constant in Lucene 8. Dividing it out makes both backends return
# the same BM25 score for the same index, so switching backends does not change
# what score-based fusion (minmax, zscore, dbsf) sees.
_K1 = 1.2
_LUCENE_SCALE = 1.0 / (1.0 + _K1)

# One indexing thread: the target host has two cores and embedding runs beside
# the writer. tantivy wants at least 15 MB of arena per indexing thread.
_WRITER_HEAP_BYTES = 64_000_000
_WRITER_THREADS = 1


# Every stored field, as ``_document`` writes them.
_STORED = ("chunk_id", "doc_id", "text", "title", "metadata", "start", "end", "ordinal", "version")


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("chunk_id", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("doc_id", stored=True, tokenizer_name="raw", index_option="basic")
    # Term frequencies are all BM25 needs; positions would only grow the index.
    builder.add_text_field("tokens", tokenizer_name="whitespace", index_option="freq")
    builder.add_text_field("facets", tokenizer_name="raw", index_option="basic")
    # A tantivy text field is always indexed; bytes fields can be stored only,
    # so the passage text never lands in the term dictionary.
    for name in ("text", "title", "metadata"):
        builder.add_bytes_field(name, stored=True, indexed=False)
    for name in ("start", "end", "ordinal", "version"):
        builder.add_integer_field(name, stored=True)
    return builder.build()


class TantivyKeywordIndex:
    """A ``KeywordIndex`` stored in ``path`` with tantivy.

    Construction opens nothing. The index is opened (or created) on first use;
    the single ``IndexWriter`` tantivy allows per directory is taken on the
    first write and kept until ``close``. A process that only searches never
    takes the writer lock, so several readers can share one directory; a
    second writer gets ``BackendUnavailable``.
    """

    name = "tantivy"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # Reentrant: a write holds it while opening the index on first use.
        self._lock = threading.RLock()
        self._opened: tuple[tantivy.Index, tantivy.Schema] | None = None
        self._writer: tantivy.IndexWriter | None = None

    # -- opening -----------------------------------------------------------

    def _open(self) -> tuple[tantivy.Index, tantivy.Schema]:
        opened = self._opened
        if opened is not None:
            return opened
        with self._lock:
            if self._opened is None:
                schema = _schema()
                try:
                    self.path.mkdir(parents=True, exist_ok=True)
                    index = tantivy.Index(schema, path=str(self.path), reuse=True)
                except (OSError, ValueError) as exc:
                    raise BackendUnavailable(
                        f"cannot open the tantivy index at {self.path}: {exc}"
                        " (an index written with another schema must be rebuilt)",
                        backend="tantivy",
                        path=str(self.path),
                    ) from exc
                # Set together so a concurrent reader never sees half of them.
                self._opened = (index, schema)
            return self._opened

    def _writer_locked(self, index: tantivy.Index) -> tantivy.IndexWriter:
        """The writer, taken on first use; the caller holds ``self._lock``."""
        if self._writer is None:
            try:
                self._writer = index.writer(
                    heap_size=_WRITER_HEAP_BYTES, num_threads=_WRITER_THREADS
                )
            except ValueError as exc:
                busy = "LockBusy" in str(exc)
                message = (
                    f"the tantivy index at {self.path} is being written by another"
                    " process (or another open index object); only one writer is possible"
                    if busy
                    else f"cannot open a writer on the tantivy index at {self.path}: {exc}"
                )
                raise BackendUnavailable(message, backend="tantivy", path=str(self.path)) from exc
        return self._writer

    def _write(self, apply: Callable[[tantivy.IndexWriter], object]) -> None:
        """Run ``apply`` on the writer, commit, and make the result searchable.

        Everything ``apply`` does lands in one commit or, on failure, not at all.
        """
        with self._lock:
            # Opened under the lock so a concurrent close cannot hand us an
            # index that is no longer the current one.
            index, _ = self._open()
            writer = self._writer_locked(index)
            try:
                apply(writer)
                writer.commit()
            except (OSError, ValueError) as exc:
                writer.rollback()
                raise BackendUnavailable(
                    f"tantivy write failed at {self.path}: {exc}",
                    backend="tantivy",
                    path=str(self.path),
                ) from exc
            # The reader reloads on its own only after a delay; a write must
            # be visible to this process's next search.
            index.reload()

    # -- writes ------------------------------------------------------------

    def upsert(self, chunks: Sequence[Chunk], tokens: Sequence[Sequence[str]]) -> None:
        """Replace every chunk of the batch's documents, in one commit."""
        if len(chunks) != len(tokens):
            raise ValueError(f"{len(chunks)} chunks but {len(tokens)} token lists")
        if not chunks:
            return
        _, schema = self._open()
        docs = [_document(schema, chunk, toks) for chunk, toks in zip(chunks, tokens, strict=True)]
        doc_ids = list(dict.fromkeys(chunk.doc_id for chunk in chunks))

        def apply(writer: tantivy.IndexWriter) -> None:
            # A delete only hits documents added before it (tantivy orders
            # operations by opstamp), so deleting first and adding second in
            # one commit swaps every old chunk, even those beyond the new
            # chunk count, for the new ones atomically.
            for doc_id in doc_ids:
                writer.delete_documents_by_term("doc_id", doc_id)
            for doc in docs:
                writer.add_document(doc)

        self._write(apply)

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """Remove every chunk of these documents; an empty list does nothing."""
        if not doc_ids:
            return
        distinct = list(dict.fromkeys(doc_ids))

        def apply(writer: tantivy.IndexWriter) -> None:
            for doc_id in distinct:
                writer.delete_documents_by_term("doc_id", doc_id)

        self._write(apply)

    def clear(self) -> None:
        """Remove every chunk."""
        self._write(lambda writer: writer.delete_all_documents())

    # -- reads -------------------------------------------------------------

    def search(
        self, tokens: Sequence[str], top_k: int, filters: Filters | None = None
    ) -> list[ScoredChunk]:
        """BM25 over ``tokens`` (OR), filtered inside the search, best first."""
        if not tokens or top_k <= 0:
            return []
        index, schema = self._open()
        query = _text_query(schema, tokens)
        clauses = filter_terms(filters)
        if clauses:
            musts = [(tantivy.Occur.Must, query)]
            musts.extend((tantivy.Occur.Must, _filter_query(schema, c)) for c in clauses)
            query = tantivy.Query.boolean_query(musts)
        searcher = index.searcher()
        hits = searcher.search(query, top_k, count=False).hits
        return [_scored(searcher.doc(address), score) for score, address in hits]

    def count(self) -> int:
        """Number of live chunks."""
        return int(self._open()[0].searcher().num_docs)

    def doc_versions(self) -> dict[str, int]:
        """Every document id with the version of its chunks."""
        searcher = self._open()[0].searcher()
        total = searcher.num_docs
        if total == 0:
            return {}
        versions: dict[str, int] = {}
        hits = searcher.search(tantivy.Query.all_query(), total, count=False).hits
        for _, address in hits:
            doc = searcher.doc(address)
            doc_id = str(doc.get_first("doc_id"))
            version = int(doc.get_first("version") or 0)
            # Chunks of one document share a version; keep the highest if a
            # crash ever left two behind.
            versions[doc_id] = max(version, versions.get(doc_id, version))
        return versions

    def iter_chunks(self) -> Iterator[Chunk]:
        """Every stored chunk (tokens aside), in no order: to rebuild a lost registry."""
        searcher = self._open()[0].searcher()
        total = searcher.num_docs
        if total == 0:
            return
        for _, address in searcher.search(tantivy.Query.all_query(), total, count=False).hits:
            doc = searcher.doc(address)
            record: dict[str, Any] = {name: doc.get_first(name) for name in _STORED}
            for name in ("text", "title"):
                record[name] = record[name].decode()
            record["metadata"] = json.loads(record["metadata"]) if record["metadata"] else {}
            yield stored_chunk(record)  # facets: recomputed from the metadata (not stored)

    def close(self) -> None:
        """Let merges finish and release the writer lock; reopens on next use."""
        with self._lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.wait_merging_threads()
            self._opened = None


def _document(schema: tantivy.Schema, chunk: Chunk, tokens: Sequence[str]) -> tantivy.Document:
    values: dict[str, Any] = {
        "chunk_id": chunk.id,
        "doc_id": chunk.doc_id,
        "tokens": " ".join(tokens),
        "facets": list(chunk.facets),
        "text": chunk.text.encode(),
        "title": chunk.title.encode(),
        "metadata": json.dumps(dict(chunk.metadata), ensure_ascii=False).encode(),
        "start": chunk.start,
        "end": chunk.end,
        "ordinal": chunk.ordinal,
        "version": chunk.version,
    }
    return tantivy.Document.from_dict(values, schema)


def _text_query(schema: tantivy.Schema, tokens: Sequence[str]) -> tantivy.Query:
    """An OR of term queries; a repeated token counts once per occurrence.

    Elasticsearch's ``match`` query emits one SHOULD clause per token and
    Lucene's BooleanQuery rewrite merges duplicates into one clause boosted by
    the count, so the score is the sum over occurrences. A boost here gives
    the same score with one posting-list walk per distinct term.
    """
    clauses: list[tuple[tantivy.Occur, tantivy.Query]] = []
    for token, times in Counter(tokens).items():
        term = tantivy.Query.term_query(schema, "tokens", token, index_option="freq")
        if times > 1:
            term = tantivy.Query.boost_query(term, float(times))
        clauses.append((tantivy.Occur.Should, term))
    return tantivy.Query.boolean_query(clauses)


def _filter_query(schema: tantivy.Schema, any_of: list[str]) -> tantivy.Query:
    """A facet clause that restricts but does not score (a filter, as in ES)."""
    terms = [
        (tantivy.Occur.Should, tantivy.Query.term_query(schema, "facets", t, index_option="basic"))
        for t in any_of
    ]
    # Without the constant-score wrapper the facet terms' own BM25 would be
    # added to the text score.
    return tantivy.Query.const_score_query(tantivy.Query.boolean_query(terms), 0.0)


def _scored(doc: tantivy.Document, score: float) -> ScoredChunk:
    # get_first per field is measurably cheaper than to_dict() on the hot path
    # (up to ``candidates`` hits per query). Every field is written by
    # ``_document``, so none is missing.
    get: Callable[[str], Any] = doc.get_first
    metadata = get("metadata")
    return ScoredChunk(
        chunk_id=get("chunk_id"),
        doc_id=get("doc_id"),
        score=float(score) * _LUCENE_SCALE,
        text=get("text").decode(),
        title=get("title").decode(),
        start=get("start"),
        end=get("end"),
        ordinal=get("ordinal"),
        metadata=json.loads(metadata) if metadata else {},
    )
