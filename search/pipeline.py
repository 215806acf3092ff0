"""Query -> (BM25 || vector) -> fuse -> hits with per-stage provenance.

Both legs run concurrently with their own deadline and the same filters. A
leg that fails or runs late is named in ``degraded`` and the other answers; a
leg that cannot serve the query (the embedder knows no Chinese, the query has
no indexable terms) is skipped on purpose and named in ``skipped``. Only when
no leg can answer is an error raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace

from search import fusion
from search import request as contract
from search.config import Settings
from search.embed import Embedder
from search.errors import BackendUnavailable, IndexLocked, InvalidRequest, SieveError
from search.keyword.base import KeywordIndex
from search.rerank import Reranker, check_scores
from search.rerank.blend import Blend, best_first
from search.rerank.calibration import calibration_of
from search.text import analyze, script_of
from search.types import Hit, LegScore, QueryPlan, ScoredChunk, SearchRequest, SearchResult
from search.vector.base import VectorIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LegResult:
    """One leg's documents, best first: its best chunk per document."""

    hits: list[ScoredChunk]
    timings_ms: dict[str, float]


def collapse(chunks: list[ScoredChunk]) -> list[ScoredChunk]:
    """Keep each document's best chunk, preserving order (input is best first)."""
    seen: set[str] = set()
    out: list[ScoredChunk] = []
    for chunk in chunks:
        if chunk.doc_id not in seen:
            seen.add(chunk.doc_id)
            out.append(chunk)
    return out


def _reason(exc: BaseException) -> str:
    """Why a stage degraded, in one line: a typed error's own message, else its type too."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, SieveError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def passage_span(prefix_len: int, text_len: int, start: int, end: int) -> tuple[int, int]:
    """The part of a passage that the reranker's best window covered.

    The reranker saw ``prefix + passage`` (the prefix is the title line) and
    answers character offsets into that. They are mapped back into the passage;
    a window that covered only the title, or the whole passage, gives the whole
    passage, which is also what a passage shorter than one window gets.
    """
    start = min(max(start - prefix_len, 0), text_len)
    end = min(max(end - prefix_len, 0), text_len)
    if end <= start or (start == 0 and end == text_len):
        return 0, text_len
    return start, end


class Pipeline:
    """Hybrid retrieval over one collection's keyword and vector indexes."""

    def __init__(
        self,
        settings: Settings,
        keyword: KeywordIndex,
        vector: VectorIndex,
        embedder: Embedder,
        executor: ThreadPoolExecutor | None = None,
        reranker: Reranker | None = None,
    ) -> None:
        self.settings = settings
        self.keyword = keyword
        self.vector = vector
        self.embedder = embedder
        self.reranker = reranker
        weight = settings.rerank_blend_weight
        self.blend = Blend(weight) if weight > 0 else None  # None: the pure rerank order
        self._executor = executor or ThreadPoolExecutor(max_workers=4, thread_name_prefix="leg")

    def search(self, request: SearchRequest) -> SearchResult:
        """Run the query; see the module docstring for the failure rules."""
        started = time.perf_counter()
        plan = self.plan(request)
        depth = plan.depth
        timings: dict[str, float] = {}
        skipped: dict[str, str] = {}

        t0 = time.perf_counter()
        tokens = analyze(request.query)
        timings["analyze"] = (time.perf_counter() - t0) * 1000

        want_bm25 = request.mode in ("bm25", "hybrid")
        want_vector = request.mode in ("vector", "hybrid")
        if want_bm25 and not tokens:
            skipped["bm25"] = "the query has no indexable terms after analysis"
            want_bm25 = False
        script = script_of(request.query)
        if want_vector and request.mode == "hybrid" and not self.embedder.serves(script):
            skipped["vector"] = (
                f"embedder {self.embedder.model_name} does not serve {script} queries "
                f"(languages: {', '.join(self.embedder.languages)})"
            )
            want_vector = False

        calls: dict[str, Callable[[], LegResult]] = {}
        if want_bm25:
            calls["bm25"] = lambda: self._bm25(tokens, depth, request)
        if want_vector:
            calls["vector"] = lambda: self._vector(request.query, depth, request)
        if want_vector:
            # Loading the model is start-up work, not a slow backend: keep it
            # outside the legs' deadline (a no-op once loaded).
            self.embedder.warm_up()
            started_legs = time.perf_counter()
        else:
            started_legs = started
        jobs: dict[str, Future[LegResult]] = {}
        if len(calls) == 1:
            # One leg: run it here. A thread hop costs more than the BM25 search
            # itself, and with no other leg to fall back on a deadline buys nothing
            # (each backend client has its own timeout).
            ((name, call),) = calls.items()
            jobs[name] = Future()
            try:
                jobs[name].set_result(call())
            except Exception as exc:  # noqa: BLE001 - reported below like a pooled leg
                jobs[name].set_exception(exc)
        else:
            jobs = {name: self._executor.submit(call) for name, call in calls.items()}

        legs: dict[str, LegResult] = {}
        degraded: dict[str, str] = {}  # stage -> why
        deadline = started_legs + self.settings.leg_timeout_s
        for name, job in jobs.items():
            try:
                legs[name] = job.result(timeout=max(0.0, deadline - time.perf_counter()))
                timings.update(legs[name].timings_ms)
            except FutureTimeout:
                degraded[name] = f"missed its {self.settings.leg_timeout_s:g} s deadline"
            except IndexLocked:
                raise  # another process owns the index: an answer from one leg would hide it
            except Exception as exc:  # noqa: BLE001 - a failed leg degrades, it does not fail the query
                degraded[name] = _reason(exc)
        for name, why in degraded.items():
            log.warning("%s leg degraded: %s", name, why)
        if jobs and not legs:
            raise BackendUnavailable(
                f"no retrieval leg answered (failed: {', '.join(degraded)})",
                backend="+".join(degraded),
            )

        t0 = time.perf_counter()
        hits = self._fuse(legs, plan.fusion, request)[: plan.window]
        timings["fusion"] = (time.perf_counter() - t0) * 1000
        reranked, cached = False, 0
        if plan.rerank and hits:
            try:
                hits, cached = self._rerank(request.query, hits, plan.rerank_depth, timings)
                reranked = True
            except Exception as exc:  # noqa: BLE001 - any reranker failure degrades to fused order
                degraded["rerank"] = _reason(exc)
                log.warning("rerank degraded, answering in fused order: %s", degraded["rerank"])
        floor = request.min_relevance
        if floor is not None:
            # Only a hit whose relevance is known can pass: none when the rerank
            # degraded (``degraded`` says so), none past the rerank depth. The map
            # is monotone, so what passes is a head of the reranked order.
            hits = [h for h in hits if h.relevance is not None and h.relevance >= floor]
        timings["total"] = (time.perf_counter() - started) * 1000
        return SearchResult(
            query=request.query,
            mode=request.mode,
            hits=hits[request.offset : request.offset + request.top_k],
            timings_ms=timings,
            degraded=list(degraded),
            degraded_reasons=degraded,
            skipped=skipped,
            fusion=plan.fusion if len(legs) > 1 else None,
            reranked=reranked,
            rerank_window=min(plan.rerank_depth, len(hits)) if reranked else 0,
            rerank_blend=self.blend.weight if reranked and self.blend else None,
            cached_scores=cached,
            offset=request.offset,
            top_k=request.top_k,
            total_window=len(hits),
            plan=plan,
        )

    def plan(self, request: SearchRequest) -> QueryPlan:
        """Validate ``request`` and fix its plan from the configured defaults.

        ``min_relevance`` needs a calibrated reranker: ``InvalidRequest`` otherwise.
        """
        contract.validate(request)
        if request.min_relevance is not None and calibration_of(self.reranker) is None:
            model = getattr(self.reranker, "model_key", "none configured")
            raise InvalidRequest(
                f"min_relevance needs a calibrated reranker, and no calibration exists for "
                f"the reranker model ({model}); fit one on judged queries with "
                "`sieve calibrate DATASET_DIR`",
                model=model,
            )
        return contract.plan(
            request,
            has_reranker=self.reranker is not None,
            candidates=self.settings.candidates,
            rerank_depth=self.settings.rerank_depth,
            fusion=self.settings.fusion,
        )

    def _rerank(
        self, query: str, hits: list[Hit], depth: int, timings: dict[str, float]
    ) -> tuple[list[Hit], int]:
        """Order the top ``depth`` hits by cross-encoder score (blended with their fused
        rank when a blend is configured); the rest keep fused order."""
        if self.reranker is None:
            raise BackendUnavailable("no reranker is configured", backend="rerank")
        t0 = time.perf_counter()
        head, tail = hits[:depth], hits[depth:]
        # The title gives the cross-encoder the context BEIR-style models were
        # trained with; offsets are mapped back past it into the document.
        prefixes = [f"{h.title}\n" if h.title else "" for h in head]
        batch = self.reranker.rerank(
            query, [p + h.text for p, h in zip(prefixes, head, strict=True)]
        )
        check_scores(batch, len(head))
        calibration = calibration_of(self.reranker)
        scored = []
        for prefix, hit, result in zip(prefixes, head, batch.scores, strict=True):
            start, end = passage_span(len(prefix), len(hit.text), result.start, result.end)
            scored.append(
                replace(
                    hit,
                    rerank_logit=result.logit,
                    rerank_score=result.score,
                    relevance=None if calibration is None else calibration.relevance(result.logit),
                    score=result.score,
                    start=hit.start + start,
                    end=hit.start + end,
                    text=hit.text[start:end],
                )
            )
        logits = [result.logit for result in batch.scores]
        scored = [scored[i] for i in best_first(logits, [h.rank for h in head], self.blend)]
        ordered = [replace(h, rank=i) for i, h in enumerate([*scored, *tail], start=1)]
        for stage, ms in batch.timings_ms.items():
            timings[f"rerank_{stage}"] = ms
        timings["rerank"] = (time.perf_counter() - t0) * 1000
        return ordered, batch.cached

    def _bm25(self, tokens: list[str], depth: int, request: SearchRequest) -> LegResult:
        t0 = time.perf_counter()
        hits = collapse(self.keyword.search(tokens, depth, request.filters))
        return LegResult(hits, {"bm25": (time.perf_counter() - t0) * 1000})

    def _vector(self, query: str, depth: int, request: SearchRequest) -> LegResult:
        t0 = time.perf_counter()
        vector = self.embedder.embed_query(query)
        t1 = time.perf_counter()
        hits = collapse(self.vector.search(vector, depth, request.filters))
        t2 = time.perf_counter()
        return LegResult(hits, {"embed": (t1 - t0) * 1000, "vector": (t2 - t1) * 1000})

    def _fuse(self, legs: dict[str, LegResult], method: str, request: SearchRequest) -> list[Hit]:
        by_leg: dict[str, dict[str, tuple[ScoredChunk, LegScore]]] = {
            name: {
                c.doc_id: (c, LegScore(c.score, rank)) for rank, c in enumerate(leg.hits, start=1)
            }
            for name, leg in legs.items()
        }
        if not legs:
            return []  # every leg was skipped on purpose; ``skipped`` says why
        if len(legs) == 1:
            (name,) = legs
            order = [(c.doc_id, c.score) for c in legs[name].hits]
        else:
            runs = [[(c.doc_id, c.score) for c in legs[n].hits] for n in ("bm25", "vector")]
            weights = request.weights or self.settings.fusion_weights
            order = fusion.fuse(method, runs, weights, k=self.settings.rrf_k)
        fused = len(legs) > 1
        hits: list[Hit] = []
        for rank, (doc_id, score) in enumerate(order, start=1):
            bm25 = by_leg.get("bm25", {}).get(doc_id)
            vec = by_leg.get("vector", {}).get(doc_id)
            # Show the passage from the leg that ranked the document higher.
            best = min((x for x in (bm25, vec) if x is not None), key=lambda x: x[1].rank)[0]
            hits.append(
                Hit(
                    doc_id=doc_id,
                    title=best.title,
                    text=best.text,
                    chunk_id=best.chunk_id,
                    start=best.start,
                    end=best.end,
                    score=score,
                    rank=rank,
                    metadata=best.metadata,
                    bm25=bm25[1] if bm25 else None,
                    vector=vec[1] if vec else None,
                    fused=LegScore(score, rank) if fused else None,
                )
            )
        return hits
