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
from search.errors import InvalidRequest, LoadError, NotFound, SieveError
from search.eval_notes import RunNotes
from search.ingest import iter_jsonl
from search.request import MAX_TOP_K
from search.rerank.base import Reranker
from search.rerank.blend import GRID, Blend, best_first, retrieval_rank
from search.text import analysis_version
from search.types import Document, SearchRequest, SearchResult

Qrels = dict[str, dict[str, int]]
Run = dict[str, list[str]]  # query id -> document ids, best first
# nDCG@10 differences below this are ties (float noise, not a ranking change).
TIE_EPSILON = 1e-9


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


def per_query(qrels: Qrels, run: Run) -> dict[str, dict[str, float]]:
    """nDCG@10, Recall@100 and MRR@10 of each judged query (an absent run scores 0)."""
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
    return {
        q: {
            "ndcg@10": measures[q]["ndcg_cut_10"],
            "recall@100": measures[q]["recall_100"],
            "mrr@10": mrr[q]["recip_rank"],
        }
        for q in judged
    }


def metrics(qrels: Qrels, run: Run) -> dict[str, float]:
    """nDCG@10, Recall@100 and MRR@10 averaged over the judged queries (absent runs count as 0)."""
    scores = per_query(qrels, run)
    n = len(scores)
    return {
        m: sum(row[m] for row in scores.values()) / n for m in ("ndcg@10", "recall@100", "mrr@10")
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


def index_fingerprint(settings: Settings, corpus_sha256: str, analysis: str) -> dict[str, Any]:
    """What a cached evaluation index was built from: reused only while all of it is equal.

    ``analysis`` is ``search.text.analysis_version()``: the BM25 tokens change
    with the analyser's rules and stop words even when the corpus does not.
    """
    return {
        "corpus_sha256": corpus_sha256,
        "analysis": analysis,
        "chunk_tokens": settings.chunk_tokens,
        "chunk_overlap": settings.chunk_overlap,
        "embed_model": settings.embed_model,
        "embed_max_length": settings.embed_max_length,
        "embed_pooling": settings.embed_pooling,
        "format": 1,
    }


def prepare_index(
    settings: Settings,
    dataset: Dataset,
    on_progress: Callable[[int], None] | None = None,
) -> Settings:
    """Index a data set's corpus into ``<data_dir>/eval/<name>``; return settings for it.

    The index is reused while its ``index_fingerprint`` (corpus, analyser,
    index-shaping settings) is unchanged; otherwise it is rebuilt from scratch.
    """
    from search.engine import SearchEngine

    eval_dir = settings.data_dir / "eval" / dataset.name
    fingerprint = index_fingerprint(settings, dataset.corpus_digest(), analysis_version())
    marker = eval_dir / "fingerprint.json"
    eval_settings = settings.for_batch().with_overrides(
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


@dataclass(frozen=True)
class RerankEval:
    """What the rerank rows of an evaluation ask for (``sieve eval --rerank``).

    ``depth`` None is the configured ``rerank_depth``. ``blend`` adds a
    ``rerank_blend`` row; ``tune_split`` chooses the blend weight from ``grid``
    first, by mean nDCG@10 on that split, and adds the row with it.
    """

    depth: int | None = None
    blend: Blend | None = None
    tune_split: str | None = None
    grid: tuple[float, ...] = GRID


@dataclass(frozen=True)
class RerankedQuery:
    """One query's reranked head in retrieval order, with its logits, and the rest."""

    head: tuple[str, ...]
    logits: tuple[float, ...]
    ranks: tuple[int, ...]  # retrieval ranks of the head
    tail: tuple[str, ...]
    total_ms: float
    rerank_ms: float
    reranked: bool
    cached: int  # rerank scores the pair-score cache answered

    @classmethod
    def of(cls, result: SearchResult, total_ms: float) -> RerankedQuery:
        """Read a reranked result (its page must hold the whole head)."""
        head = sorted(
            ((h, h.rerank_logit) for h in result.hits if h.rerank_logit is not None),
            key=lambda pair: retrieval_rank(pair[0]),
        )
        return cls(
            head=tuple(h.doc_id for h, _ in head),
            logits=tuple(logit for _, logit in head),
            ranks=tuple(retrieval_rank(h) for h, _ in head),
            tail=tuple(h.doc_id for h in result.hits if h.rerank_logit is None),
            total_ms=total_ms,
            rerank_ms=result.timings_ms.get("rerank", 0.0),
            reranked=result.reranked,
            cached=result.cached_scores,
        )

    def ranking(self, blend: Blend | None = None) -> list[str]:
        """Document ids best first: the head by (blended) rerank score, then the rest."""
        order = best_first(self.logits, self.ranks, blend)
        return [self.head[i] for i in order] + list(self.tail)


def versus(qrels: Qrels, baseline: Run, run: Run) -> dict[str, int]:
    """Judged queries whose nDCG@10 ``run`` raises (wins), lowers (losses) or keeps (ties)."""
    before, after = per_query(qrels, baseline), per_query(qrels, run)
    deltas = [after[q]["ndcg@10"] - before[q]["ndcg@10"] for q in before]
    wins = sum(d > TIE_EPSILON for d in deltas)
    losses = sum(d < -TIE_EPSILON for d in deltas)
    return {"wins": wins, "losses": losses, "ties": len(deltas) - wins - losses}


def rerank_row(
    qrels: Qrels, reranked: dict[str, RerankedQuery], baseline: Run, blend: Blend | None = None
) -> dict[str, float]:
    """Quality and latency of the reranked run, the rerank stage's own latency, and
    per-query wins, losses and ties against ``baseline`` (the retrieval run)."""
    run = {qid: q.ranking(blend) for qid, q in reranked.items()}
    row = summarise(qrels, run, [q.total_ms for q in reranked.values()])
    stage = [q.rerank_ms for q in reranked.values() if q.reranked]
    row["rerank_p50_ms"] = round(percentile(stage, 50), 2)
    row["rerank_p95_ms"] = round(percentile(stage, 95), 2)
    row["reranked"] = len(stage)
    row["cached_scores"] = sum(q.cached for q in reranked.values())
    row.update(versus(qrels, baseline, run))
    if blend is not None:
        row["blend_weight"] = blend.weight
    return row


def tune_blend(
    qrels: Qrels, reranked: dict[str, RerankedQuery], grid: Sequence[float]
) -> tuple[Blend, dict[str, float]]:
    """The grid weight with the best mean nDCG@10 (ties: the smaller), and every weight's."""
    scores = {}
    for weight in sorted(grid):
        run = {qid: q.ranking(Blend(weight)) for qid, q in reranked.items()}
        scores[weight] = metrics(qrels, run)["ndcg@10"]
    best = max(scores, key=lambda w: (scores[w], -w))
    return Blend(best), {f"{w:g}": round(v, 4) for w, v in scores.items()}


def _check_reranker(settings: Settings, reranker: Reranker | None) -> Reranker:
    """The reranker, once it has answered (this also loads the model); else why not."""
    from search.engine import reranker_unavailable

    if reranker is None:
        raise reranker_unavailable(settings)
    try:
        reranker.rerank("warm up", ["the model loads before the timed queries"])
    except SieveError as exc:
        raise reranker_unavailable(settings, str(exc), reranker) from exc
    return reranker


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
    rerank: RerankEval | None = None,
    reranker: Reranker | None = None,
    on_index_progress: Callable[[int], None] | None = None,
    on_query_progress: Callable[[int], None] | None = None,
    runs_out: dict[str, Run] | None = None,
) -> dict[str, Any]:
    """Index a data set (see ``prepare_index``) and evaluate every mode on one split.

    The modes' rows are retrieval only. With ``rerank``, hybrid retrieval with
    its head reranked by ``reranker`` (None: the one the settings build)
    adds a ``rerank`` row, compared query by query with the ``hybrid`` row
    (run for the purpose if not asked for), and a ``rerank_blend`` row when
    ``rerank`` gives or tunes a blend (``limit`` cuts the tuning split too). A
    missing or failing reranker is
    ``BackendUnavailable``, before any indexing. When ``runs_out`` is given,
    each row's ranked document ids per query land there.
    """
    from search.engine import FROM_SETTINGS, SearchEngine, build_reranker

    dataset = Dataset.open(dataset_dir, split)
    qrels, queries = dataset.judged(limit)
    depth = settings.rerank_depth
    tuning: tuple[Qrels, dict[str, str]] | None = None
    checked: Reranker | None = None
    if rerank is not None:
        depth = settings.rerank_depth if rerank.depth is None else rerank.depth
        if depth > MAX_TOP_K:
            raise InvalidRequest(
                f"an evaluation reranks at most {MAX_TOP_K} hits (one page); got depth {depth}"
            )
        if rerank.tune_split == split:
            raise InvalidRequest(
                f"tune the blend on a split other than the one evaluated ({split})"
            )
        if rerank.tune_split is not None:
            tuning = Dataset.open(dataset_dir, rerank.tune_split).judged(limit)
        if "hybrid" not in modes:
            modes = [*modes, "hybrid"]
        checked = _check_reranker(
            settings,
            reranker if reranker is not None else build_reranker(settings.for_batch()),
        )
    eval_settings = prepare_index(settings, dataset, on_index_progress)
    results: dict[str, dict[str, float]] = {}
    runs: dict[str, Run] = {} if runs_out is None else runs_out
    report: dict[str, Any] = {"dataset": dataset.name, "split": split, "queries": len(queries)}
    engine_reranker = FROM_SETTINGS if checked is None else checked
    with SearchEngine(eval_settings, reranker=engine_reranker) as engine:

        def request(text: str, mode: str = "hybrid", reranked: bool = False) -> SearchRequest:
            return SearchRequest(
                query=text,
                mode=mode,  # type: ignore[arg-type]  # checked by the pipeline
                # A reranked page holds the whole head, for the blend to reorder.
                top_k=max(top_k, depth) if reranked else top_k,
                collection="eval",
                fusion=fusion,
                weights=weights,
                rerank=reranked,
                rerank_depth=depth if reranked else None,
            )

        ran: dict[str, dict[str, Any]] = {}
        for mode in modes:
            notes = RunNotes()

            def search(text: str, mode: str = mode, notes: RunNotes | None = notes) -> list[str]:
                result = engine.search(request(text, mode))
                if notes is not None:
                    notes.add(result)
                return [hit.doc_id for hit in result.hits]

            # One untimed query first: the first call loads the model and warms caches.
            search(next(iter(queries.values())), notes=None)
            runs[mode], latencies = run_queries(queries, search, on_query_progress)
            results[mode] = summarise(qrels, runs[mode], latencies)
            ran[mode] = notes.summary()
        report["ran"] = ran

        if rerank is not None and checked is not None:

            def rerank_all(queries: dict[str, str]) -> dict[str, RerankedQuery]:
                out = {}
                for qid, text in queries.items():
                    started = time.perf_counter()
                    result = engine.search(request(text, reranked=True))
                    out[qid] = RerankedQuery.of(result, (time.perf_counter() - started) * 1000)
                    if on_query_progress is not None:
                        on_query_progress(1)
                return out

            blend, source = rerank.blend, "given"
            if blend is None and tuning is None:
                # None given: the blend a served search of this collection uses (its
                # stored weight, SIEVE_RERANK_BLEND_WEIGHT, the model card's), if any.
                served = engine.collection("eval").pipeline
                blend, source = served.blend, served.blend_source
            if tuning is not None:
                source = f"tuned on {rerank.tune_split}"
                blend, grid = tune_blend(tuning[0], rerank_all(tuning[1]), rerank.grid)
                report["blend_tuning"] = {
                    "split": rerank.tune_split,
                    "queries": len(tuning[1]),
                    "weight": blend.weight,
                    "ndcg@10": grid,
                }
            reranked = rerank_all(queries)
            results["rerank"] = rerank_row(qrels, reranked, runs["hybrid"])
            runs["rerank"] = {qid: q.ranking() for qid, q in reranked.items()}
            if blend is not None:
                results["rerank_blend"] = rerank_row(qrels, reranked, runs["hybrid"], blend)
                report["blend_source"] = source
                runs["rerank_blend"] = {qid: q.ranking(blend) for qid, q in reranked.items()}
            report["reranker"] = {"model": checked.model_key, "depth": depth}
    return {**report, "results": results}
