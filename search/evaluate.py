"""BEIR-format data sets and retrieval metrics.

A data set is a folder with ``corpus.jsonl``, ``queries.jsonl`` and
``qrels/<split>.tsv``. Metrics are computed by pytrec_eval (the trec_eval
code): nDCG@10, Recall@100 and MRR@10, averaged over the judged queries.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.config import Settings
from search.errors import InvalidRequest, LoadError, NotFound
from search.ingest import iter_jsonl
from search.types import Document, SearchRequest

Qrels = dict[str, dict[str, int]]
Run = dict[str, list[str]]  # query id -> document ids, best first


@dataclass(frozen=True)
class Dataset:
    """Paths of one BEIR data set, checked to exist."""

    root: Path
    split: str

    @property
    def name(self) -> str:
        """The folder name, e.g. ``scifact``."""
        return self.root.resolve().name

    @property
    def corpus(self) -> Path:
        """The corpus file."""
        return self.root / "corpus.jsonl"

    @property
    def queries_path(self) -> Path:
        """The queries file."""
        return self.root / "queries.jsonl"

    @property
    def qrels_path(self) -> Path:
        """The judgements of this split."""
        return self.root / "qrels" / f"{self.split}.tsv"

    @classmethod
    def open(cls, root: str | Path, split: str = "test") -> Dataset:
        """Check that every file is there, naming the first one missing."""
        dataset = cls(Path(root), split)
        if not dataset.root.is_dir():
            raise NotFound(f"data set folder {dataset.root} does not exist", path=str(root))
        for path in (dataset.corpus, dataset.queries_path, dataset.qrels_path):
            if not path.is_file():
                raise NotFound(f"data set file {path} is missing", path=str(path))
        return dataset

    def corpus_digest(self) -> str:
        """SHA-256 of the corpus file, to tell whether a cached index is still valid."""
        digest = hashlib.sha256()
        with self.corpus.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def documents(self) -> Iterator[Document | LoadError]:
        """The corpus as documents (and load errors, line by line)."""
        return iter_jsonl(self.corpus)

    def qrels(self) -> Qrels:
        """Judgements: query id -> {document id: relevance}."""
        qrels: Qrels = {}
        with self.qrels_path.open(encoding="utf-8") as handle:
            reader = csv.reader(handle, delimiter="\t")
            for lineno, row in enumerate(reader, start=1):
                if not row or (lineno == 1 and row[0] == "query-id"):
                    continue
                if len(row) < 3:
                    raise LoadError(
                        f"{self.qrels_path}:{lineno}: expected query-id, corpus-id, score",
                        path=str(self.qrels_path),
                        line=lineno,
                    )
                try:
                    qrels.setdefault(row[0], {})[row[1]] = int(row[2])
                except ValueError as exc:
                    raise LoadError(
                        f"{self.qrels_path}:{lineno}: score {row[2]!r} is not an integer",
                        path=str(self.qrels_path),
                        line=lineno,
                    ) from exc
        return qrels

    def queries(self, only: set[str] | None = None) -> dict[str, str]:
        """Query id -> text, restricted to ``only`` when given."""
        out: dict[str, str] = {}
        with self.queries_path.open(encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    qid, text = str(record["_id"]), record["text"]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise LoadError(
                        f"{self.queries_path}:{lineno}: bad query record: {exc}",
                        path=str(self.queries_path),
                        line=lineno,
                    ) from exc
                if only is None or qid in only:
                    out[qid] = text
        return out

    def judged(self, limit: int | None = None) -> tuple[Qrels, dict[str, str]]:
        """The judged queries (the first ``limit``) and their judgements; none is an error."""
        qrels = self.qrels()
        queries = self.queries(only=set(qrels))
        if limit is not None:
            queries = dict(list(queries.items())[:limit])
        if not queries:
            raise InvalidRequest(f"no query of {self.queries_path} is judged in {self.qrels_path}")
        return {qid: qrels[qid] for qid in queries}, queries


def metrics(qrels: Qrels, run: Run) -> dict[str, float]:
    """nDCG@10, Recall@100 and MRR@10 over the judged queries (absent runs count as 0)."""
    import pytrec_eval

    judged = {qid: rels for qid, rels in qrels.items() if any(v > 0 for v in rels.values())}
    if not judged:
        raise InvalidRequest("the qrels hold no relevant judgement")
    # Scores from ranks, so trec_eval's own tie-breaking never reorders a run.
    full = {qid: {d: float(len(ids) - i) for i, d in enumerate(ids)} for qid, ids in run.items()}
    top10 = {qid: {d: float(10 - i) for i, d in enumerate(ids[:10])} for qid, ids in run.items()}
    for qid in judged:
        full.setdefault(qid, {})
        top10.setdefault(qid, {})
    measures = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10", "recall.100"}).evaluate(full)
    mrr = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(top10)
    n = len(judged)
    return {
        "ndcg@10": sum(measures[q]["ndcg_cut_10"] for q in judged) / n,
        "recall@100": sum(measures[q]["recall_100"] for q in judged) / n,
        "mrr@10": sum(mrr[q]["recip_rank"] for q in judged) / n,
    }


def percentile(values: Sequence[float], pct: float) -> float:
    """The pct-th percentile (inclusive method), 0.0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1])


def run_queries(
    queries: dict[str, str],
    search: Callable[[str], list[str]],
    on_progress: Callable[[int], None] | None = None,
) -> tuple[Run, list[float]]:
    """Run every query through ``search``; returns the run and per-query latencies in ms."""
    run: Run = {}
    latencies: list[float] = []
    for qid, text in queries.items():
        started = time.perf_counter()
        run[qid] = search(text)
        latencies.append((time.perf_counter() - started) * 1000)
        if on_progress is not None:
            on_progress(1)
    return run, latencies


def summarise(qrels: Qrels, run: Run, latencies: list[float]) -> dict[str, float]:
    """Quality metrics plus latency p50/p95, rounded for reports."""
    out = {k: round(v, 4) for k, v in metrics(qrels, run).items()}
    out["p50_ms"] = round(percentile(latencies, 50), 2)
    out["p95_ms"] = round(percentile(latencies, 95), 2)
    return out


def prepare_index(
    settings: Settings,
    dataset: Dataset,
    on_progress: Callable[[int], None] | None = None,
) -> Settings:
    """Index a data set's corpus into ``<data_dir>/eval/<name>``; return settings for it.

    The index is reused while the corpus file and the index-shaping settings
    are unchanged; otherwise it is rebuilt from scratch.
    """
    from search.engine import SearchEngine

    eval_dir = settings.data_dir / "eval" / dataset.name
    fingerprint = {
        "corpus_sha256": dataset.corpus_digest(),
        "chunk_tokens": settings.chunk_tokens,
        "chunk_overlap": settings.chunk_overlap,
        "embed_model": settings.embed_model,
        "embed_max_length": settings.embed_max_length,
        "format": 1,
    }
    marker = eval_dir / "fingerprint.json"
    eval_settings = settings.with_overrides(
        data_dir=eval_dir,
        registry_url="",
        collection="eval",
        keyword_backend="tantivy",
        vector_backend="qdrant-edge",
    )
    if marker.is_file() and json.loads(marker.read_text()) == fingerprint:
        return eval_settings
    if eval_dir.exists():
        shutil.rmtree(eval_dir)
    failed: dict[str, str] = {}
    with SearchEngine(eval_settings) as engine:
        docs = (d for d in dataset.documents() if not isinstance(d, LoadError))
        failed = engine.index(docs, batch_size=256, on_progress=on_progress).failed
    if failed:
        raise InvalidRequest(
            f"{len(failed)} corpus documents failed to index, e.g. {next(iter(failed.items()))}"
        )
    marker.write_text(json.dumps(fingerprint))
    return eval_settings


def evaluate_dataset(
    settings: Settings,
    dataset_dir: str | Path,
    *,
    split: str = "test",
    modes: Sequence[str] = ("bm25", "vector", "hybrid"),
    fusion: str | None = None,
    weights: tuple[float, float] | None = None,
    limit: int | None = None,
    top_k: int = 100,
    on_index_progress: Callable[[int], None] | None = None,
    on_query_progress: Callable[[int], None] | None = None,
    runs_out: dict[str, Run] | None = None,
) -> dict[str, Any]:
    """Index a data set (see ``prepare_index``) and evaluate every mode on one split.

    When ``runs_out`` is given, each mode's ranked document ids per query land there.
    """
    from search.engine import SearchEngine

    dataset = Dataset.open(dataset_dir, split)
    qrels, queries = dataset.judged(limit)
    eval_settings = prepare_index(settings, dataset, on_index_progress)
    results: dict[str, dict[str, float]] = {}
    with SearchEngine(eval_settings) as engine:
        for mode in modes:

            def search(text: str, mode: str = mode) -> list[str]:
                request = SearchRequest(
                    query=text,
                    mode=mode,  # type: ignore[arg-type]  # checked by the pipeline
                    top_k=top_k,
                    collection="eval",
                    fusion=fusion,
                    weights=weights,
                )
                return [hit.doc_id for hit in engine.search(request).hits]

            # One untimed query first: the first call loads the model and warms caches.
            search(next(iter(queries.values())))
            run, latencies = run_queries(queries, search, on_query_progress)
            results[mode] = summarise(qrels, run, latencies)
            if runs_out is not None:
                runs_out[mode] = run
    return {"dataset": dataset.name, "split": split, "queries": len(queries), "results": results}
