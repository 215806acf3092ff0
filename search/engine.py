"""The facade the command line, the API and the workers use.

``SearchEngine(settings)`` is free to construct. Each collection's indexes
open on first use, the embedding model loads on the first embedding, and the
implementation of every part is chosen from ``Settings`` (tantivy or
Elasticsearch, Qdrant Edge or a Qdrant server, SQLite or PostgreSQL).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from search.config import Settings
from search.embed import Embedder
from search.errors import InvalidRequest
from search.indexing import Indexer, IndexReport, ProgressCallback
from search.keyword import KeywordIndex, open_keyword_index
from search.pipeline import Pipeline
from search.registry import Registry
from search.types import Document, SearchRequest, SearchResult
from search.vector import VectorIndex, open_vector_index

COLLECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def check_collection(name: str) -> str:
    """Collection names become directory and index names: keep them plain."""
    if not isinstance(name, str) or not COLLECTION_NAME.match(name):
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


class SearchEngine:
    """Hybrid search over named collections, configured by one ``Settings``."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.registry = Registry(settings.registry)
        self.embedder = embedder or Embedder(
            settings.embed_model,
            device=settings.embed_device,
            batch_size=settings.embed_batch_size,
            max_length=settings.embed_max_length,
            pooling=settings.embed_pooling,
            allow_download=settings.allow_download,
            languages=settings.embed_languages,
        )
        self._collections: dict[str, Collection] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sieve-leg")

    def collection(self, name: str | None = None) -> Collection:
        """Open (once) and return a collection's indexes, pipeline and indexer."""
        name = check_collection(name or self.settings.collection)
        with self._lock:
            found = self._collections.get(name)
            if found is None:
                keyword = open_keyword_index(self.settings, name)
                vector = open_vector_index(self.settings, name, self.embedder.dim)
                found = Collection(
                    name=name,
                    keyword=keyword,
                    vector=vector,
                    pipeline=Pipeline(
                        self.settings, keyword, vector, self.embedder, executor=self._executor
                    ),
                    indexer=Indexer(
                        self.settings, self.registry, keyword, vector, self.embedder, name
                    ),
                )
                self._collections[name] = found
            return found

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
        """Index (insert, update, or skip unchanged) documents."""
        return self.collection(collection).indexer.index(
            docs, batch_size=batch_size, on_progress=on_progress
        )

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
        return out

    def close(self) -> None:
        """Close every opened index and the registry."""
        with self._lock:
            for col in self._collections.values():
                col.keyword.close()
                col.vector.close()
            self._collections.clear()
        self.registry.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> SearchEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
