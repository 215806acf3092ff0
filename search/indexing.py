"""Document -> clean -> chunk -> analyse + embed -> both indexes, idempotently.

The registry records every document before anything touches an index. Work
that can fail on one document (cleaning, chunking, embedding) happens before
any index write, so a failed document keeps its previous version searchable.
A batch write that fails is retried document by document, so one poison
document cannot take its batch down with it.

Out-of-order writes never overwrite a newer version: right before a batch is
written, the registry's current version of each of its documents is read
again, and a document whose registry version is not the one about to be
written (a newer one was staged meanwhile, or the document was deleted) is
skipped. The indexes guard the same way on their side for the moment between
this check and the write (``search.store``): an index that holds a newer
version refuses the write, which is then reported in ``IndexReport.refused``
and not acknowledged in the registry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice

from search.batching import batched
from search.config import Settings
from search.embed import Embedder
from search.errors import IndexingError, SieveError
from search.keyword.base import KeywordIndex
from search.registry import BACKENDS, Registry, Staged
from search.store import Refusal, UpsertResult
from search.text import analyze, clean_text, make_chunks
from search.types import Chunk, Document
from search.vector.base import VectorIndex

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int], None]
# Exceptions a caller wants raised rather than recorded as a document's failure.
Propagate = tuple[type[BaseException], ...]


@dataclass
class IndexReport:
    """What one indexing run did, document by document."""

    indexed: int = 0
    unchanged: int = 0
    # Not written, rightly: already in both indexes at the registry's version,
    # superseded by a newer version, or no longer in the registry.
    skipped: int = 0
    chunks: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    # Not written because an index holds a newer version: doc id -> why.
    refused: dict[str, str] = field(default_factory=dict)
    # Ids asked for (``index_registered``) that the registry does not hold.
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def not_written(self) -> dict[str, str]:
        """Why each document was not written: failed, or refused by an index."""
        return {**self.failed, **self.refused}

    def merge(self, other: IndexReport) -> None:
        """Add another report's counts to this one."""
        self.indexed += other.indexed
        self.unchanged += other.unchanged
        self.skipped += other.skipped
        self.chunks += other.chunks
        self.failed.update(other.failed)
        self.refused.update(other.refused)
        self.missing.extend(other.missing)


@dataclass(frozen=True)
class Prepared:
    """A document turned into chunks with their BM25 tokens and embedding inputs."""

    staged: Staged
    chunks: list[Chunk]
    tokens: list[list[str]]
    embed_inputs: list[str]


def prepare(staged: Staged, settings: Settings) -> Prepared:
    """Clean and chunk one document; raises ``IndexingError`` for unusable content."""
    doc = staged.document
    if not isinstance(doc.text, str):
        raise IndexingError(f"document {doc.id!r}: text must be a string", doc_id=doc.id)
    text = clean_text(doc.text, doc.content_type)
    chunks = make_chunks(
        doc.id,
        text,
        title=doc.title,
        version=staged.version,
        metadata=doc.metadata,
        max_tokens=settings.chunk_tokens,
        overlap=settings.chunk_overlap,
    )
    if not chunks:
        raise IndexingError(f"document {doc.id!r} has no text after cleaning", doc_id=doc.id)
    # The title goes into every chunk's BM25 tokens and embedding input (as BEIR
    # concatenates title and text), but not into the stored passage text.
    title_tokens = analyze(doc.title) if doc.title else []
    tokens = [title_tokens + analyze(chunk.text) for chunk in chunks]
    inputs = [f"{doc.title}. {chunk.text}" if doc.title else chunk.text for chunk in chunks]
    return Prepared(staged, chunks, tokens, inputs)


class Indexer:
    """Writes documents of one collection into the registry and both indexes."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        keyword: KeywordIndex,
        vector: VectorIndex,
        embedder: Embedder,
        collection: str,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.keyword = keyword
        self.vector = vector
        self.embedder = embedder
        self.collection = collection

    def index(
        self,
        docs: Iterable[Document],
        *,
        batch_size: int = 64,
        on_progress: ProgressCallback | None = None,
    ) -> IndexReport:
        """Index documents in batches; ``on_progress(n)`` after each batch of n documents."""
        report = IndexReport()
        started = time.perf_counter()
        for batch in batched(docs, batch_size):
            report.merge(self.index_batch(batch))
            if on_progress is not None:
                on_progress(len(batch))
        optimize = getattr(self.vector, "optimize", None)
        if callable(optimize) and report.indexed:
            optimize()  # build the HNSW graph once at the end of a bulk load
        report.seconds = time.perf_counter() - started
        return report

    def index_batch(self, docs: Sequence[Document]) -> IndexReport:
        """Stage, prepare, embed and write one batch."""
        report = IndexReport()
        staged = self.registry.stage(self.collection, docs)
        todo: list[Prepared] = []
        for item in staged:
            if not item.needs_indexing:
                report.unchanged += 1
                continue
            try:
                todo.append(prepare(item, self.settings))
            except SieveError as exc:
                self._fail(report, item, str(exc))
        if todo:
            self._write(todo, report)
        return report

    def _write(
        self,
        todo: list[Prepared],
        report: IndexReport,
        backends: Sequence[str] = BACKENDS,
        *,
        propagate: Propagate = (),
    ) -> None:
        """Write prepared documents and acknowledge them in the registry.

        An exception in ``propagate`` is raised (batches written so far stay
        acknowledged) instead of being recorded as the documents' failure.
        """
        todo = self._still_current(todo, report)
        if not todo:
            return
        try:
            refused = self._write_many(todo, backends)
        except Exception as exc:  # isolate the failing document below
            if isinstance(exc, propagate):
                # Not about a document (an engine down, a job's time limit):
                # splitting the batch would only meet it once per document.
                raise
            if len(todo) == 1:
                self._fail(report, todo[0].staged, f"{type(exc).__name__}: {exc}")
                return
            log.warning("batch write failed (%s); retrying document by document", exc)
            for item in todo:
                self._write([item], report, backends, propagate=propagate)
            return
        self._acknowledge(todo, report, backends, refused)

    def _acknowledge(
        self,
        todo: list[Prepared],
        report: IndexReport,
        backends: Sequence[str],
        refused: dict[str, dict[str, Refusal]],
    ) -> None:
        """Record each document in the registry for the backends that took it."""
        for item in todo:
            doc_id = item.staged.document.id
            by_backend = refused.get(doc_id, {})
            accepted = [b for b in backends if b not in by_backend]
            if accepted:
                self.registry.mark_indexed(
                    self.collection, doc_id, item.staged.version, accepted, len(item.chunks)
                )
            if by_backend:
                why = "; ".join(f"{b}: {r}" for b, r in by_backend.items())
                log.warning("document %r not indexed (reconcile repairs it): %s", doc_id, why)
                report.refused[doc_id] = why
                continue
            report.indexed += 1
            report.chunks += len(item.chunks)

    def _still_current(self, todo: list[Prepared], report: IndexReport) -> list[Prepared]:
        """Drop documents whose registry version is no longer the one being written.

        Read right before the write: a newer version staged since this job
        began has its own job, and writing the older one now would overwrite
        it (or resurrect a deleted document).
        """
        ids = [item.staged.document.id for item in todo]
        current = self.registry.versions(self.collection, ids)
        keep: list[Prepared] = []
        for item in todo:
            doc_id, version = item.staged.document.id, item.staged.version
            if current.get(doc_id) != version:
                log.info(
                    "document %r version %d not written: the registry now holds %s",
                    doc_id,
                    version,
                    current.get(doc_id, "no such document"),
                )
                report.skipped += 1
                continue
            keep.append(item)
        return keep

    def _write_many(
        self, todo: list[Prepared], backends: Sequence[str]
    ) -> dict[str, dict[str, Refusal]]:
        """Write both indexes; returns the refused documents: doc id -> backend -> refusal."""
        chunks = [c for item in todo for c in item.chunks]
        results: dict[str, UpsertResult] = {}
        if "keyword" in backends:
            tokens = [t for item in todo for t in item.tokens]
            results["keyword"] = self.keyword.upsert(chunks, tokens)
        if "vector" in backends:
            vectors = self.embedder.embed([s for item in todo for s in item.embed_inputs])
            results["vector"] = self.vector.upsert(chunks, [list(map(float, v)) for v in vectors])
        refused: dict[str, dict[str, Refusal]] = {}
        for backend, result in results.items():
            for refusal in result.refused:
                refused.setdefault(refusal.doc_id, {})[backend] = refusal
        return refused

    def rewrite(
        self,
        items: Iterable[tuple[Document, int]],
        backends: Sequence[str],
        *,
        batch_size: int = 64,
        on_progress: ProgressCallback | None = None,
        propagate: Propagate = (),
        optimize: bool = True,
    ) -> IndexReport:
        """Write registry documents (at their recorded version) into some backends.

        Used by repairs, rebuilds and indexing jobs: the registry is not
        restaged, so versions stay as recorded and nothing counts as a change.
        ``propagate``: exceptions to raise instead of marking documents failed
        (``BackendUnavailable`` for a caller that retries later). ``optimize``:
        build the vector index's HNSW graph at the end (bulk loads; small jobs
        leave it to the index's own backlog rule).
        """
        report = IndexReport()
        started = time.perf_counter()
        iterator = iter(items)
        while batch := list(islice(iterator, batch_size)):
            todo: list[Prepared] = []
            for doc, version in batch:
                staged = Staged(doc, version, needs_indexing=True)
                try:
                    todo.append(prepare(staged, self.settings))
                except SieveError as exc:
                    self._fail(report, staged, str(exc))
            if todo:
                self._write(todo, report, backends, propagate=propagate)
            if on_progress is not None:
                on_progress(len(batch))
        build = getattr(self.vector, "optimize", None)
        if optimize and callable(build) and "vector" in backends and report.indexed:
            build()
        report.seconds = time.perf_counter() - started
        return report

    def index_registered(
        self,
        doc_ids: Sequence[str],
        *,
        batch_size: int = 64,
        propagate: Propagate = (),
    ) -> IndexReport:
        """Index documents the registry already holds, each at its recorded version.

        The consumer of the outbox: an upload stages documents in the registry
        and hands their ids to a job that calls this. Idempotent: a document
        already in both indexes at its registry version is skipped, and one
        written again gets the same chunk ids, so a replayed or duplicated job
        changes nothing. Ids the registry does not hold are reported in
        ``missing`` (and counted as skipped). Each batch is acknowledged in the
        registry as soon as it is written, so a job killed midway redoes only
        the batch it was on. ``propagate`` as in ``rewrite``.
        """
        report = IndexReport()
        started = time.perf_counter()
        ids = list(dict.fromkeys(doc_ids))
        records = self.registry.records(self.collection, ids)
        todo: list[tuple[Document, int]] = []
        for doc_id in ids:
            record = records.get(doc_id)
            if record is None:
                report.missing.append(doc_id)
                report.skipped += 1
            elif record.indexed:
                report.skipped += 1
            else:
                todo.append((record.document(), record.version))
        if report.missing:
            log.warning(
                "%d documents are not in the registry of %r (deleted, or never staged): %s",
                len(report.missing),
                self.collection,
                report.missing[:10],
            )
        if todo:
            report.merge(
                self.rewrite(
                    todo,
                    BACKENDS,
                    batch_size=batch_size,
                    propagate=propagate,
                    optimize=False,
                )
            )
        report.seconds = time.perf_counter() - started
        return report

    def _fail(self, report: IndexReport, item: Staged, error: str) -> None:
        doc_id = item.document.id
        log.warning("document %r not indexed: %s", doc_id, error)
        report.failed[doc_id] = error
        self.registry.mark_failed(self.collection, doc_id, item.version, error)

    def delete(self, doc_ids: Sequence[str]) -> list[str]:
        """Delete documents everywhere; returns the ids the registry knew.

        Indexes first, registry last: if an index delete fails the row stays,
        so the delete can be retried and nothing is left orphaned.
        """
        ids = sorted({d for d in doc_ids if d})
        if not ids:
            return []
        known = self.registry.existing(self.collection, ids)
        # Unknown ids are deleted from the indexes too: they may be orphans of
        # an earlier crash, and deleting nothing is harmless.
        self.keyword.delete_documents(ids)
        self.vector.delete_documents(ids)
        self.registry.delete(self.collection, ids)
        return sorted(known)
