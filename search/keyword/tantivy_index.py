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
from typing import Any, TypeVar

import tantivy

from search.errors import BackendUnavailable
from search.keyword.base import Candidates, hydrated, no_passages
from search.store import (
    HIT_FIELDS,
    DocFilter,
    UpsertResult,
    check_batch,
    decode_chunk,
    decode_hit,
    decode_version,
    delete_documents,
    encode_chunk,
    highest_versions,
    replace_chunks,
)
from search.types import Chunk, Filters, ScoredChunk, filter_terms

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
# Record fields kept in stored-only bytes fields (metadata as JSON): a tantivy
# text field is always indexed, and the passage text has no business in the
# term dictionary.
_BYTES_FIELDS = ("text", "title", "metadata")

T = TypeVar("T")


# Every stored field, as ``_document`` writes them.
_STORED = ("chunk_id", "doc_id", "text", "title", "metadata", "start", "end", "ordinal", "version")


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("chunk_id", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("doc_id", stored=True, tokenizer_name="raw", index_option="basic")
    # Term frequencies are all BM25 needs; positions would only grow the index.
    builder.add_text_field("tokens", tokenizer_name="whitespace", index_option="freq")
    builder.add_text_field("facets", tokenizer_name="raw", index_option="basic")
    for name in _BYTES_FIELDS:
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
    in_process = True

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

    def _write(self, apply: Callable[[tantivy.IndexWriter], T]) -> T:
        """Run ``apply`` on the writer, commit, and make the result searchable.

        Everything ``apply`` does lands in one commit or, on failure, not at all.
        """
        with self._lock:
            # Opened under the lock so a concurrent close cannot hand us an
            # index that is no longer the current one.
            index, _ = self._open()
            writer = self._writer_locked(index)
            try:
                result = apply(writer)
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
            return result

    def _store(self, writer: tantivy.IndexWriter) -> _Commit:
        index, schema = self._open()
        return _Commit(index, schema, writer)

    # -- writes ------------------------------------------------------------

    def upsert(self, chunks: Sequence[Chunk], tokens: Sequence[Sequence[str]]) -> UpsertResult:
        """Replace every chunk of the batch's documents, in one commit; older writes refused.

        The version check, the write and the pruning run in one commit under
        the writer lock, so no other write can land between them.
        """
        check_batch(chunks, tokens)
        if not chunks:
            return UpsertResult()
        return self._write(lambda writer: replace_chunks(self._store(writer), chunks, tokens))

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """Remove every chunk of these documents; an empty list does nothing."""
        if doc_ids:
            self._write(lambda writer: delete_documents(self._store(writer), doc_ids))

    def clear(self) -> None:
        """Remove every chunk."""
        self._write(lambda writer: writer.delete_all_documents())

    # -- reads -------------------------------------------------------------

    def search(
        self, tokens: Sequence[str], top_k: int, filters: Filters | None = None
    ) -> list[ScoredChunk]:
        """BM25 over ``tokens`` (OR), filtered inside the search, best first."""
        return hydrated(self.candidates(tokens, top_k, filters))

    def candidates(
        self, tokens: Sequence[str], top_k: int, filters: Filters | None = None
    ) -> Candidates:
        """The hits of ``search`` by id and score; passages decoded when hydrated.

        The stored documents are read here (the document id lives only there;
        a fast field would change the schema and so every existing index), but
        decoding their passages and metadata, which costs as much again, waits
        for ``hydrate``, which decodes the documents already read.
        """
        if not tokens or top_k <= 0:
            return Candidates([], no_passages)
        index, schema = self._open()
        query = _text_query(schema, tokens)
        clauses = filter_terms(filters)
        if clauses:
            musts = [(tantivy.Occur.Must, query)]
            musts.extend((tantivy.Occur.Must, _filter_query(schema, c)) for c in clauses)
            query = tantivy.Query.boolean_query(musts)
        searcher = index.searcher()
        found: list[ScoredChunk] = []
        stored: dict[str, tuple[tantivy.Document, float]] = {}
        for raw, address in searcher.search(query, top_k, count=False).hits:
            doc = searcher.doc(address)
            score = float(raw) * _LUCENE_SCALE
            hit = ScoredChunk(
                chunk_id=str(doc.get_first("chunk_id")),
                doc_id=str(doc.get_first("doc_id")),
                score=score,
            )
            stored[hit.chunk_id] = (doc, score)
            found.append(hit)

        def hydrate(chunk_ids: Sequence[str]) -> dict[str, ScoredChunk]:
            return {c: _scored(*stored[c]) for c in chunk_ids if c in stored}

        return Candidates(found, hydrate)

    def passages(self, chunk_ids: Sequence[str]) -> dict[str, ScoredChunk]:
        """The stored chunks of ``chunk_ids`` (score 0.0), by id; unknown ids are absent."""
        wanted = list(dict.fromkeys(chunk_ids))
        # A reader (a rerank worker) must not create an index where none was written.
        if not wanted or (self._opened is None and not self.path.exists()):
            return {}
        index, schema = self._open()
        searcher = index.searcher()
        query = tantivy.Query.term_set_query(schema, "chunk_id", wanted)
        out: dict[str, ScoredChunk] = {}
        for _, address in searcher.search(query, len(wanted), count=False).hits:
            chunk = _scored(searcher.doc(address), 0.0)
            out[chunk.chunk_id] = chunk
        return out

    def count(self) -> int:
        """Number of live chunks."""
        return int(self._open()[0].searcher().num_docs)

    def doc_versions(self) -> dict[str, int]:
        """Every document id with the version of its chunks."""
        index, schema = self._open()
        stored = _stored(index.searcher(), tantivy.Query.all_query())
        return highest_versions((doc_id, version) for _, doc_id, version in stored)

    def chunk_versions(self, doc_id: str) -> dict[str, int]:
        """The chunk ids stored for ``doc_id``, with their versions."""
        index, schema = self._open()
        query = tantivy.Query.term_set_query(schema, "doc_id", [doc_id])
        return {chunk_id: version for chunk_id, _, version in _stored(index.searcher(), query)}

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
            yield decode_chunk(record)  # facets: recomputed from the metadata (not stored)

    def close(self) -> None:
        """Let merges finish and release the writer lock; reopens on next use."""
        with self._lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.wait_merging_threads()
            self._opened = None


class _Commit:
    """The chunk-store primitives (``search.store.ChunkStore``) inside one tantivy commit.

    Reads see the last commit, not this one's pending operations: the stored
    versions are those before the write, and a delete filter is matched
    against chunks that were there before it.
    """

    def __init__(
        self, index: tantivy.Index, schema: tantivy.Schema, writer: tantivy.IndexWriter
    ) -> None:
        self.index, self.schema, self.writer = index, schema, writer

    def stored_versions(self, doc_ids: Sequence[str]) -> dict[str, int]:
        stored = _stored(self.index.searcher(), self._of_documents(doc_ids))
        return highest_versions((doc_id, version) for _, doc_id, version in stored)

    def put(self, chunks: Sequence[Chunk], extras: Sequence[Sequence[str]]) -> dict[str, int]:
        for chunk, tokens in zip(chunks, extras, strict=True):
            # tantivy has no primary key: an upsert is a delete of the id and
            # an add, and a delete only hits documents added before it (tantivy
            # orders operations by opstamp), so the new copy survives it.
            self.writer.delete_documents_by_term("chunk_id", chunk.id)
            self.writer.add_document(_document(self.schema, chunk, tokens))
        return {}

    def delete(self, where: DocFilter) -> None:
        if where.at_most is None and not where.keep:
            for doc_id in where.doc_ids:
                self.writer.delete_documents_by_term("doc_id", doc_id)
            return
        # ``version`` is stored, not indexed: the filter is matched here.
        for chunk_id, doc_id, version in _stored(
            self.index.searcher(), self._of_documents(where.doc_ids)
        ):
            if where.matches(doc_id, version, chunk_id):
                self.writer.delete_documents_by_term("chunk_id", chunk_id)

    def _of_documents(self, doc_ids: Sequence[str]) -> tantivy.Query:
        return tantivy.Query.term_set_query(self.schema, "doc_id", list(doc_ids))


def _stored(searcher: tantivy.Searcher, query: tantivy.Query) -> list[tuple[str, str, int]]:
    """``(chunk_id, doc_id, version)`` of every chunk ``query`` matches."""
    # Counted first: a limit of ``num_docs`` would size the top-k buffer by the index.
    counted: Any = searcher.search(query, 1, count=True)  # the type stub lacks ``count``
    total = int(counted.count or 0)
    if not total:
        return []
    hits = searcher.search(query, total, count=False).hits
    out: list[tuple[str, str, int]] = []
    for _, address in hits:
        doc = searcher.doc(address)
        doc_id, version = decode_version(
            {"doc_id": doc.get_first("doc_id"), "version": doc.get_first("version")}
        )
        out.append((str(doc.get_first("chunk_id")), doc_id, version))
    return out


def _document(schema: tantivy.Schema, chunk: Chunk, tokens: Sequence[str]) -> tantivy.Document:
    values = encode_chunk(chunk)
    values["tokens"] = " ".join(tokens)
    for name in _BYTES_FIELDS:
        value = values[name]
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        values[name] = text.encode()
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
    """The full hit of a stored document; ``score`` already on Lucene's scale."""
    # get_first per field is measurably cheaper than to_dict() on the hot path
    # (up to ``candidates`` hits per query). Every field is written by
    # ``_document``, so none is missing.
    get: Callable[[str], Any] = doc.get_first
    record = {name: get(name) for name in HIT_FIELDS}
    for name in _BYTES_FIELDS:
        if name in record:
            text = record[name].decode()
            record[name] = json.loads(text) if name == "metadata" and text else text
    return decode_hit(record, score)
