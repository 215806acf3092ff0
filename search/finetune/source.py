"""Where judged queries come from: a BEIR folder, or a pairs file over an indexed collection.

Either way the result is a ``TrainingSource``: the judged queries, the text of
each document as the reranker sees it at query time (``title`` + newline +
text, as ``search.pipeline`` builds it), Sieve's hybrid retrieval without
reranking (to mine negatives and to make the validation candidates), and the
ids to top up a short negative pool with.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.errors import InvalidRequest, LoadError, NotFound
from search.finetune.data import JudgedQueries
from search.request import MAX_TOP_K
from search.types import SearchRequest

if TYPE_CHECKING:
    from search.config import Settings
    from search.engine import SearchEngine


def passage(title: str, text: str) -> str:
    """A document as the reranker is given it (``search.pipeline`` prefixes the title)."""
    return f"{title}\n{text}" if title else text


@dataclass
class TrainingSource:
    """Judged queries and the engine to mine with; close it (or use ``with``) when done."""

    data: JudgedQueries
    engine: SearchEngine
    collection: str
    describe: dict[str, Any]  # what the card says about the data
    filler: Sequence[str]
    _texts: dict[str, str | None] = field(default_factory=dict)
    _fetch: Callable[[str], str | None] | None = None

    def text_of(self, doc_id: str) -> str | None:
        """The passage text of ``doc_id`` (None when the document is unknown)."""
        if doc_id not in self._texts and self._fetch is not None:
            self._texts[doc_id] = self._fetch(doc_id)
        return self._texts.get(doc_id)

    def retrieve(self, query: str, depth: int) -> list[str]:
        """Doc ids of the hybrid top ``depth`` (fused order, no reranking)."""
        request = SearchRequest(
            query=query,
            mode="hybrid",
            top_k=min(depth, MAX_TOP_K),
            collection=self.collection,
            rerank=False,
        )
        ids = [hit.doc_id for hit in self.engine.search(request).hits]
        return list(dict.fromkeys(ids))

    def corpus_digest(self) -> str:
        """The data set's corpus hash, or a hash of every document text read so far."""
        if "corpus_sha256" in self.describe:
            return str(self.describe["corpus_sha256"])
        digest = hashlib.sha256()
        for doc_id in sorted(self._texts):
            digest.update(f"{doc_id}\t{self._texts[doc_id] or ''}\n".encode())
        return digest.hexdigest()

    def close(self) -> None:
        """Close the engine."""
        self.engine.close()

    def __enter__(self) -> TrainingSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _limited(data: JudgedQueries, limit: int | None) -> JudgedQueries:
    if limit is None:
        return data
    keep = data.judged()[:limit]
    return JudgedQueries(
        {q: data.queries[q] for q in keep},
        {q: data.qrels[q] for q in keep},
        {q: v for q, v in (data.given_negatives or {}).items() if q in keep},
    )


def from_dataset(
    settings: Settings,
    dataset_dir: str | Path,
    *,
    split: str = "train",
    limit: int | None = None,
    on_index_progress: Callable[[int], None] | None = None,
) -> TrainingSource:
    """A BEIR folder's judged queries of ``split``; its corpus indexed as ``sieve eval`` does."""
    from search.engine import SearchEngine
    from search.evaluate import Dataset, prepare_index

    dataset = Dataset.open(dataset_dir, split)
    qrels = dataset.qrels()
    data = _limited(JudgedQueries(dataset.queries(only=set(qrels)), qrels), limit)
    if not data.judged():
        raise InvalidRequest(f"no query of {dataset.queries_path} has a relevant judgement")
    texts: dict[str, str | None] = {
        doc.id: passage(doc.title, doc.text)
        for doc in dataset.documents()
        if not isinstance(doc, LoadError)
    }
    eval_settings = prepare_index(settings, dataset, on_index_progress)
    describe = {
        "source": "dataset",
        "path": str(Path(dataset_dir).resolve()),
        "name": dataset.name,
        "split": split,
        "corpus_sha256": dataset.corpus_digest(),
    }
    engine = SearchEngine(eval_settings, reranker=None)
    return TrainingSource(data, engine, "eval", describe, sorted(texts), texts)


def read_pairs(path: Path) -> JudgedQueries:
    """``{"query", "positives": [ids], "negatives"?: [ids]}`` per line; ids ``p<line>``."""
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    negatives: dict[str, list[str]] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise NotFound(f"pairs file {path}: {exc}", path=str(path)) from exc
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            query, positives = str(record["query"]), [str(d) for d in record["positives"]]
            given = [str(d) for d in record.get("negatives") or []]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LoadError(
                f"{path}:{lineno}: expected {{'query', 'positives': [ids]}}: {exc}",
                path=str(path),
                line=lineno,
            ) from exc
        if not query.strip() or not positives:
            raise LoadError(f"{path}:{lineno}: empty query or no positive", path=str(path))
        qid = f"p{lineno}"
        queries[qid] = query
        qrels[qid] = dict.fromkeys(positives, 1)
        if given:
            negatives[qid] = given
    return JudgedQueries(queries, qrels, negatives)


def from_pairs(
    settings: Settings, pairs_file: Path, *, collection: str, limit: int | None = None
) -> TrainingSource:
    """A pairs file's queries against the indexed ``collection`` (documents read from it)."""
    from search.engine import SearchEngine

    data = _limited(read_pairs(pairs_file), limit)
    engine = SearchEngine(settings, reranker=None)
    if not engine.has_collection(collection):
        engine.close()
        raise NotFound(f"collection {collection!r} not found", collection=collection)

    def fetch(doc_id: str) -> str | None:
        try:
            doc = engine.get_document(collection, doc_id)
        except NotFound:
            return None
        return passage(str(doc["title"] or ""), str(doc["text"] or ""))

    filler = sorted({d for q in data.judged() for d in data.positives(q)})
    describe = {
        "source": "pairs",
        "path": str(Path(pairs_file).resolve()),
        "collection": collection,
    }
    return TrainingSource(data, engine, collection, describe, filler, {}, fetch)
