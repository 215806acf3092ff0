"""The facade the command line, the API and the workers use.

``SearchEngine(settings)`` is free to construct. Each collection's indexes
open on first use, the embedding model loads on the first embedding, and the
implementation of every part is chosen from ``Settings`` (tantivy or
Elasticsearch, Qdrant Edge or a Qdrant server, SQLite or PostgreSQL).
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from search.chunk_presence import DocumentChunks, document_chunks
from search.config import COLLECTION_NAME, DEFAULT_COLLECTION, Settings
from search.embed import Embedder, TransformerEmbedder
from search.errors import BackendUnavailable, ConfigError, Conflict, InvalidRequest, NotFound
from search.fusion import FusionChoice
from search.indexing import Indexer, IndexReport, ProgressCallback, Propagate
from search.integrity import AnyIndex, verify_collection
from search.job_runner import JobRunner
from search.jobs import TaskLog
from search.keyword import KeywordIndex, open_keyword_index
from search.pipeline import Pipeline
from search.records import DocumentSummary, ListFilter
from search.registry import Registry
from search.rerank import BoundedReranker, CachingReranker, CrossEncoderReranker, Reranker
from search.rerank.base import innermost
from search.scores import make_store
from search.types import Document, SearchRequest, SearchResult
from search.vector import VectorIndex, open_vector_index
from search.warmup import Warmup, engine_parts

log = logging.getLogger(__name__)

# The collection setting (``Registry.collection_setting``) holding the rerank blend
# ``sieve calibrate`` chose: {"weight", "model_fingerprint", "chosen_on", ...}.
BLEND_SETTING = "rerank_blend"
# The collection setting holding what ``sieve tune`` found (search.fusion_tuning):
# the fusion to use when "adopted", and the held-out evidence either way.
FUSION_SETTING = "fusion"
MAX_LIST_DOCUMENTS = 200  # documents per page of a listing
DEFAULT_LIST_DOCUMENTS = 50


def check_collection(name: str) -> str:
    """Collection names become directory and index names: keep them plain."""
    # fullmatch: "$" alone would accept a trailing newline.
    if not isinstance(name, str) or not COLLECTION_NAME.fullmatch(name):
        raise InvalidRequest(
            f"invalid collection name {name!r}: use 1-64 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit",
            collection=name,
        )
    return name


@dataclass
class Collection:
    """The opened parts of one collection."""

    name: str
    keyword: KeywordIndex
    vector: VectorIndex
    pipeline: Pipeline
    indexer: Indexer
    # Indexes not checked against the registry when opened (their backend was
    # down); reconcile and recovery check again, strictly, before any repair.
    unchecked: tuple[str, ...] = ()


def build_reranker(settings: Settings, remote: Reranker | None = None) -> Reranker | None:
    """The reranker the settings ask for, behind the pair-score cache, or None.

    ``auto`` means in-process when the model is found locally, else no
    reranking; ``local`` always means in-process (a missing model then shows
    as ``rerank`` in ``degraded``); ``celery`` needs ``remote``, built by the
    edge that owns the Celery app, because the engine never imports Celery.
    """
    backend = settings.rerank_backend
    inner: Reranker
    if backend == "none":
        return None
    if backend == "celery":
        if remote is None:
            raise ConfigError(
                "SIEVE_RERANK_BACKEND=celery: the caller must pass the Celery reranker"
            )
        inner = remote
    else:
        local = CrossEncoderReranker.from_settings(settings)
        if backend == "auto" and not local.available():
            return None
        # In-process, the caller's wait is bounded here; the Celery client bounds its own.
        inner = BoundedReranker(local, settings.rerank_timeout_s)
    return CachingReranker(inner, make_store(settings), settings.cache_ttl_s)


def reranker_unavailable(
    settings: Settings, why: str = "", reranker: Reranker | None = None
) -> BackendUnavailable:
    """The one-line error of a command that needs a reranker and has none: why, and the
    fix, in ``search.rerank.status``'s words. ``why`` is the error of ``reranker`` (one
    that failed to answer); without it, there is no reranker."""
    from search.rerank.status import describe

    status = describe(settings, reranker, cuda=None)
    if status.active:  # it is there and failed otherwise (late, busy): its own error says it
        message = why or "the reranker did not answer"
    else:
        message = f"{status.why}. Fix: {status.fix}"
    return BackendUnavailable(f"no reranker is available: {message}", backend="rerank")


class FromSettings:
    """Marker default: build the reranker from ``Settings`` (``None`` means no reranker)."""


FROM_SETTINGS = FromSettings()


class SearchEngine:
    """Hybrid search over named collections, configured by one ``Settings``."""

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder | None = None,
        reranker: Reranker | None | FromSettings = FROM_SETTINGS,
    ) -> None:
        self.settings = settings
        self.reranker = build_reranker(settings) if isinstance(reranker, FromSettings) else reranker
        self.registry = Registry(settings.registry)
        self.embedder = embedder or TransformerEmbedder(
            settings.embed_model,
            device=settings.embed_device,
            batch_size=settings.embed_batch_size,
            token_budget=settings.embed_token_budget,
            max_length=settings.embed_max_length,
            pooling=settings.embed_pooling,
            allow_download=settings.allow_download,
            languages=settings.embed_languages,
            runtime=settings.embed_runtime,
            onnx_cache=settings.onnx_cache,
        )
        # Loads nothing yet: ``warm_up_in_background`` (a server) or first use does.
        self.warmup = Warmup(engine_parts(self.embedder, self.reranker))
        self._collections: dict[str, Collection] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sieve-leg")
        self.tasks = TaskLog(self.registry)  # durable indexing tasks (search.jobs)
        self._runner: JobRunner | None = None

    def job_runner(self) -> JobRunner:
        """This process's indexing runner, started on first use; it resumes unfinished tasks.

        One per engine, whichever app or queue asks: two runners over one task
        log would only race for the same batches.
        """
        with self._lock:
            if self._runner is None:
                self._runner = JobRunner(self.index_staged, self.tasks)
            runner = self._runner
        runner.start()
        return runner

    def warm_up_in_background(self) -> threading.Thread:
        """Load the Chinese dictionary, the embedder and the local reranker on a thread.

        For a server, after any fork: ``warmup.warming()`` names what is still
        loading meanwhile, and a query that needs a part before it is loaded
        waits for it and reports the wait as ``timings_ms["load"]``.
        """
        return self.warmup.start()

    def collection(self, name: str | None = None) -> Collection:
        """Open (once) and return a collection's indexes, pipeline and indexer.

        The indexes are checked against the registry first
        (``search.integrity.verify_collection``): ``RegistryMismatch`` when they
        were written by another registry, ``RegistryCorrupt`` when the registry
        is damaged; the collection is then not opened.
        """
        name = check_collection(name or self.settings.collection)
        with self._lock:
            found = self._collections.get(name)
            if found is None:
                keyword = open_keyword_index(self.settings, name)
                vector = open_vector_index(self.settings, name, self.embedder.dim)
                try:
                    # Before anything can be written or deleted on the registry's word.
                    unchecked = verify_collection(
                        self.settings,
                        self.registry,
                        name,
                        {"keyword": keyword, "vector": vector},
                        strict=False,
                    )
                except BaseException:
                    keyword.close()  # releases the file locks the check took
                    vector.close()
                    raise
                found = Collection(
                    name=name,
                    keyword=keyword,
                    vector=vector,
                    pipeline=Pipeline(
                        self.settings,
                        keyword,
                        vector,
                        self.embedder,
                        executor=self._executor,
                        reranker=self.reranker,
                        collection_blend=self.collection_blend(name),
                        warmup=self.warmup,
                        collection_fusion=self.collection_fusion(name),
                    ),
                    indexer=Indexer(
                        self.settings, self.registry, keyword, vector, self.embedder, name
                    ),
                    unchecked=tuple(unchecked),
                )
                self._collections[name] = found
            return found

    def collection_blend(self, name: str) -> float | None:
        """The blend weight ``sieve calibrate`` stored with collection ``name`` for this
        reranker's model, if any (one chosen for other weights does not apply)."""
        stored = self.registry.collection_setting(name, BLEND_SETTING)
        if not isinstance(stored, dict) or not isinstance(stored.get("weight"), int | float):
            return None
        located = getattr(innermost(self.reranker), "located", None)
        model = located() if callable(located) else None
        if model is not None and stored.get("model_fingerprint") not in (None, model.fingerprint):
            return None
        return float(stored["weight"])

    def collection_fusion(self, name: str) -> FusionChoice | None:
        """The fusion ``sieve tune`` adopted for collection ``name``, if it adopted one."""
        stored = self.registry.collection_setting(name, FUSION_SETTING)
        if not isinstance(stored, dict) or not stored.get("adopted"):
            return None
        try:
            return FusionChoice.of(stored)
        except (KeyError, TypeError, ValueError, IndexError):
            log.warning("collection %s: ignoring a malformed stored fusion %r", name, stored)
            return None

    def search(self, request: SearchRequest) -> SearchResult:
        """Run one query against its collection."""
        return self.collection(request.collection).pipeline.search(request)

    def index(
        self,
        docs: Iterable[Document],
        collection: str | None = None,
        *,
        batch_size: int = 64,
        on_progress: ProgressCallback | None = None,
    ) -> IndexReport:
        """Index (insert, update, or skip unchanged) documents; records the collection."""
        col = self.collection(collection)
        self.registry.add_collection(col.name)
        return col.indexer.index(docs, batch_size=batch_size, on_progress=on_progress)

    def index_staged(
        self,
        collection: str,
        doc_ids: Sequence[str],
        *,
        batch_size: int = 64,
        propagate: Propagate = (),
    ) -> tuple[IndexReport, set[str]]:
        """Index documents already staged in the registry (a task's batch).

        Returns the report and which of ``doc_ids`` both indexes now hold at their
        registry version (written now, or already there from an earlier attempt).
        ``batch_size`` and ``propagate`` as in ``Indexer.index_registered``.
        """
        report = self.collection(collection).indexer.index_registered(
            doc_ids, batch_size=batch_size, propagate=propagate
        )
        records = self.registry.records(collection, doc_ids)
        return report, {doc_id for doc_id, record in records.items() if record.indexed}

    def delete(self, doc_ids: Sequence[str], collection: str | None = None) -> list[str]:
        """Delete documents from the registry and both indexes; returns the known ids."""
        if not doc_ids:
            raise InvalidRequest("no document ids given: nothing was deleted")
        return self.collection(collection).indexer.delete(doc_ids)

    def stats(self, collection: str | None = None) -> dict[str, object]:
        """Registry counts and each index's chunk count."""
        col = self.collection(collection)
        out: dict[str, object] = {"collection": col.name}
        out.update(self.registry.stats(col.name))
        out["keyword_backend"] = col.keyword.name
        out["keyword_chunks"] = col.keyword.count()
        out["vector_backend"] = col.vector.name
        out["vector_chunks"] = col.vector.count()
        out["embed_model"] = self.embedder.model_name
        # Which query languages get the vector leg (search.embed_languages).
        out["embed_languages"] = list(self.embedder.languages)
        # The fusion a query without its own gets, and what ``sieve tune`` found.
        pipeline = col.pipeline
        out["fusion"] = f"{pipeline.default_fusion.label()} ({pipeline.fusion_source})"
        tuned = self.registry.collection_setting(col.name, FUSION_SETTING)
        if isinstance(tuned, dict):
            out["fusion_tuning"] = tuned
        return out

    # -- collections and documents (the admin API) ----------------------------

    def has_collection(self, name: str) -> bool:
        """Whether ``name`` exists: ``default`` always does, others once created or indexed."""
        if name in (DEFAULT_COLLECTION, self.settings.collection):
            return True
        return self.registry.has_collection(check_collection(name))

    def collections(self) -> list[dict[str, object]]:
        """Every collection with its registry counts, sorted by name (``default`` included)."""
        builtin = {DEFAULT_COLLECTION, self.settings.collection}
        names = sorted({*builtin, *self.registry.collection_names()})
        out: list[dict[str, object]] = []
        for name in names:
            counts = self.registry.stats(name)
            out.append({"name": name, "documents": counts["documents"], "chunks": counts["chunks"]})
        return out

    def create_collection(self, name: str) -> None:
        """Record a new, empty collection; ``Conflict`` if one of that name exists."""
        check_collection(name)
        if self.has_collection(name) or not self.registry.add_collection(name):
            raise Conflict(f"collection {name!r} already exists", collection=name)

    def drop_collection(self, name: str) -> int:
        """Delete a collection everywhere; returns how many documents it held.

        Indexes first, registry last (as ``delete``): if an index cannot be
        cleared the registry still knows the documents and the drop can be
        retried. ``default`` is emptied but keeps existing.
        """
        if not self.has_collection(name):
            raise NotFound(f"collection {name!r} not found", collection=name)
        col = self.collection(name)
        with self._lock:
            self._collections.pop(name, None)
        col.keyword.clear()
        col.vector.clear()
        col.keyword.close()
        col.vector.close()
        # The embedded backends keep their files here; the server backends have none.
        shutil.rmtree(self.settings.data_dir / "collections" / name, ignore_errors=True)
        return self.registry.drop_collection(name)

    def list_documents(
        self,
        collection: str,
        *,
        after: str = "",
        limit: int = DEFAULT_LIST_DOCUMENTS,
        where: ListFilter | None = None,
    ) -> list[DocumentSummary]:
        """One page of a collection's documents in id order, those after ``after``.

        ``limit`` is 1 to ``MAX_LIST_DOCUMENTS``; the last id of a full page is the
        next page's ``after``. ``where`` keeps only the documents it matches (the
        registry filters; pages stay full). ``NotFound`` for an unknown collection.
        """
        if not 1 <= limit <= MAX_LIST_DOCUMENTS:
            raise InvalidRequest(
                f"limit must be 1 to {MAX_LIST_DOCUMENTS}, not {limit}", limit=limit
            )
        if not self.has_collection(collection):
            raise NotFound(f"collection {collection!r} not found", collection=collection)
        return self.registry.list_documents(collection, after, limit, where)

    def get_document(self, collection: str, doc_id: str) -> dict[str, object]:
        """A document as the registry holds it, with its indexing state; ``NotFound`` if absent."""
        record = self.registry.get(check_collection(collection), doc_id)
        if record is None:
            raise NotFound(f"document {doc_id!r} not found", doc_id=doc_id)
        return {
            "id": record.id,
            "title": record.title,
            "text": record.text,
            "metadata": dict(record.metadata),
            "content_type": record.content_type,
            "version": record.version,
            "status": record.status,
            "chunks": record.chunks,
            "error": record.error,
            "updated_at": record.updated_at.isoformat() if record.updated_at else None,
        }

    def document_chunks(self, collection: str, doc_id: str) -> DocumentChunks:
        """The chunks of a document's stored text and which index holds each; ``NotFound``."""
        col = self.collection(collection)
        record = self.registry.get(col.name, doc_id)
        if record is None:
            raise NotFound(f"document {doc_id!r} not found", doc_id=doc_id)
        indexes: dict[str, AnyIndex] = {"keyword": col.keyword, "vector": col.vector}
        return document_chunks(self.settings, record, indexes)

    def close_collections(self) -> None:
        """Close every opened index; a collection is opened (and checked) again on next use."""
        with self._lock:
            for col in self._collections.values():
                col.keyword.close()
                col.vector.close()
            self._collections.clear()

    def close(self) -> None:
        """Stop the indexing runner (after its batch), close every opened index and the registry."""
        if self._runner is not None:
            self._runner.close()
        self.close_collections()
        self.registry.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> SearchEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
