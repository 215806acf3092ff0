"""Helpers shared by the Celery indexing tests: worker settings, documents, index contents.

The embedded engines admit one process per data directory, so the content
readers here open the indexes themselves: tantivy as a reader (a worker may
still be writing), Qdrant Edge only once no worker has the shard open.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import tantivy
from celery import Celery
from celery.result import AsyncResult

from search.keyword.tantivy_index import TantivyKeywordIndex
from search.registry import Registry
from search.types import Document
from search.vector.edge import QdrantEdgeIndex

READY = r"index worker ready: embedder"
DIM = 384  # all-MiniLM-L6-v2
WORDS = (
    "river stone garden tomato compost bread flour oven yeast salt water kettle tea leaf "
    "mountain trail boot rain cloud wind harbour boat sail rope knot lantern candle wax"
).split()


def worker_env(data_dir: Path, registry_url: str, queue: str, **extra: str) -> dict[str, str]:
    """What an index worker of these tests runs with (on top of start_worker's)."""
    return {
        "SIEVE_DATA_DIR": str(data_dir),
        "SIEVE_REGISTRY_URL": registry_url,
        "SIEVE_INDEX_QUEUE": queue,
        "SIEVE_RERANK_QUEUE": "rerank-unused",  # not consumed: no reranker loads
        "SIEVE_RERANK_BACKEND": "none",
        "SIEVE_EMBED_DEVICE": "cpu",
        # Small batches: a job of a few dozen documents is several acknowledged batches.
        "SIEVE_EMBED_BATCH_SIZE": "8",
        **extra,
    }


def documents(
    prefix: str, n: int, seed: int = 0, words: int = 60, *, titled: bool = False
) -> list[Document]:
    """``n`` documents of random words; ``titled`` adds a title and a metadata field."""
    rng = random.Random(seed)
    return [
        Document(
            id=f"{prefix}-{i:03}",
            title=f"{prefix} {i}" if titled else "",
            text=" ".join(rng.choice(WORDS) for _ in range(words)),
            metadata={"n": i} if titled else {},
        )
        for i in range(n)
    ]


def stage(registry: Registry, collection: str, docs: list[Document]) -> list[str]:
    """Record documents in the registry (the outbox); returns their ids."""
    registry.add_collection(collection)
    registry.stage(collection, docs)
    return [d.id for d in docs]


def result_of(app: Celery, task_id: str, timeout_s: float = 120) -> dict:
    """A task's result, which must be a dict."""
    value = AsyncResult(task_id, app=app).get(timeout=timeout_s)
    assert isinstance(value, dict), value
    return value


def keyword_chunks(data_dir: Path, collection: str) -> Counter[str]:
    """Chunks per document in the tantivy index."""
    index = TantivyKeywordIndex(data_dir / "collections" / collection / "tantivy")
    try:
        searcher = index._open()[0].searcher()
        if searcher.num_docs == 0:
            return Counter()
        hits = searcher.search(tantivy.Query.all_query(), searcher.num_docs, count=False).hits
        return Counter(str(searcher.doc(address).get_first("doc_id")) for _, address in hits)
    finally:
        index.close()


def vector_chunks(data_dir: Path, collection: str) -> Counter[str]:
    """Points per document in the Qdrant Edge shard (only when no worker has it open)."""
    import qdrant_edge as qe

    index = QdrantEdgeIndex(data_dir / "collections" / collection / "qdrant-edge", DIM)
    try:
        shard, counts, offset = index._open(), Counter[str](), None
        while True:
            request = qe.ScrollRequest(
                offset=offset, limit=1_024, with_payload=qe.PayloadSelector.Include(["doc_id"])
            )
            records, offset = shard.scroll(request)
            counts.update(str(r.payload["doc_id"]) for r in records)
            if offset is None:
                return counts
    finally:
        index.close()
