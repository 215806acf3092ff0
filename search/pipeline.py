"""Query -> (BM25 || vector) -> fuse -> hits with per-stage provenance.

Both legs run concurrently with the same filters: the vector leg in the pool
with a deadline, BM25 beside it on the calling thread when its index is in
process (tantivy), else in the pool with a deadline too. A leg that fails or
runs late is named in ``degraded`` and the other answers; a
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
from search.fusion import FusionChoice
from search.fusion_adaptive import shipped as shipped_adaptive
from search.hydration import Hydration
from search.keyword.base import Hydrate, KeywordIndex
from search.passages import passage_ref, rerank_passage
from search.rerank import Reranker, check_scores
from search.rerank.base import card_of
from search.rerank.blend import best_first, card_blend_weight, resolve_blend
from search.rerank.calibration import calibration_of
from search.rerank.depth import DepthPolicy
from search.text import analyze, script_of
from search.text.analyze import needs_dictionary
from search.types import Hit, LegScore, QueryPlan, ScoredChunk, SearchRequest, SearchResult
from search.vector.base import VectorIndex
from search.warmup import DICTIONARY, EMBEDDER, RERANKER, Warmup, engine_parts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LegResult:
    """One leg's documents, best first: its best chunk per document."""

    hits: list[ScoredChunk]
    timings_ms: dict[str, float]
    # Set when ``hits`` carry ids and scores only (the BM25 leg): their passages.
    hydrate: Hydrate | None = None


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


def _run_here(call: Callable[[], LegResult]) -> Future[LegResult]:
    """Run a leg on the calling thread, its outcome in a ``Future`` like a pooled leg's."""
    job: Future[LegResult] = Future()
    try:
        job.set_result(call())
    except Exception as exc:  # noqa: BLE001 - reported by the caller like a pooled leg
        job.set_exception(exc)
    return job


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
        collection_blend: float | None = None,
        warmup: Warmup | None = None,
        collection_fusion: FusionChoice | None = None,
    ) -> None:
        self.settings = settings
        self.keyword = keyword
        self.vector = vector
        self.embedder = embedder
        self.reranker = reranker
        # None: the pure rerank order; the source is said in every reranked result.
        self.blend, self.blend_source = resolve_blend(
            collection=collection_blend,
            setting=settings.rerank_blend_weight,
            card=card_blend_weight(card_of(reranker)) if reranker is not None else None,
        )
        # The fusion ``sieve tune`` adopted for this collection; None: the configured one.
        self.default_fusion = collection_fusion or FusionChoice(
            settings.fusion, settings.fusion_weights, settings.rrf_k
        )
        self.fusion_source = "collection" if collection_fusion is not None else "setting"
        self.depth_policy = DepthPolicy(settings.rerank_skip_gap)
        self._executor = executor or ThreadPoolExecutor(max_workers=4, thread_name_prefix="leg")
        # The engine's, shared by its collections; a pipeline built alone loads its own.
        self.warmup = Warmup(engine_parts(embedder, reranker)) if warmup is None else warmup

    def search(self, request: SearchRequest) -> SearchResult:
        """Run the query; see the module docstring for the failure rules."""
        started = time.perf_counter()
        plan = self.plan(request)
        depth = plan.depth
        timings: dict[str, float] = {}
        skipped: dict[str, str] = {}

        # Start-up work a query had to do itself (no warm-up ran, or it is still
        # running): shown as "load", never hidden inside another stage.
        load_ms = 0.0
        if needs_dictionary(request.query):
            load_ms += self.warmup.ensure(DICTIONARY)
        t0 = time.perf_counter()
        tokens = analyze(request.query)
        timings["analyze"] = (time.perf_counter() - t0) * 1000

        want_bm25 = request.mode in ("bm25", "hybrid")
        want_vector = request.mode in ("vector", "hybrid")
        if want_bm25 and not tokens:
            skipped["bm25"] = "the query has no indexable terms after analysis"
            want_bm25 = False
        skip_vector = self.vector_skip(request.query) if request.mode == "hybrid" else None
        if want_vector and skip_vector is not None:
            skipped["vector"] = skip_vector
            want_vector = False

        calls: dict[str, Callable[[], LegResult]] = {}
        if want_bm25:
            calls["bm25"] = lambda: self._bm25(tokens, depth, request)
        if want_vector:
            calls["vector"] = lambda: self._vector(request.query, depth, request)
        if want_vector:
            # Loading the model is start-up work, not a slow backend: keep it
            # outside the legs' deadline (free once loaded).
            load_ms += self.warmup.ensure(EMBEDDER)
            started_legs = time.perf_counter()
        else:
            started_legs = started
        jobs: dict[str, Future[LegResult]] = {}
        if len(calls) == 1:
            # One leg: run it here. A thread hop costs more than the BM25 search
            # itself, and with no other leg to fall back on a deadline buys nothing
            # (each backend client has its own timeout).
            ((name, call),) = calls.items()
            jobs[name] = _run_here(call)
        elif len(calls) == 2 and self.keyword.in_process:
            # Both legs, BM25 in this process (tantivy): the vector leg goes to the
            # pool first and BM25 runs here meanwhile, its Python work overlapping
            # the embedding's GIL-free model time. Two hops to the pool and back cost
            # more than BM25 itself, and an in-process index has no server to hang
            # on, so this leg needs no deadline of its own.
            vector_job = self._executor.submit(calls["vector"])
            jobs = {"bm25": _run_here(calls["bm25"]), "vector": vector_job}
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
        # Only the hits a stage reads are built: the reranked head and the page.
        # The rest of the window is only counted (``total_window``).
        built = request.offset + request.top_k
        if plan.rerank:
            built = max(built, plan.rerank_depth)
        used, source = self.fusion_for(request)
        runs: fusion.Legs | None = None
        signals: dict[str, float] | None = None
        applied = used
        if len(legs) > 1:
            bm25, vector = ([(c.doc_id, c.score) for c in legs[n].hits] for n in ("bm25", "vector"))
            runs = (bm25, vector)
            # Adaptive fusion fixes its weights from this query's legs here.
            applied, signals = used.resolved(runs)
        hits, lazy, in_window = self._fuse(legs, runs, applied, plan.window, built)
        timings["fusion"] = (time.perf_counter() - t0) * 1000
        # Passages are decoded only for the hits that need them: the reranked
        # head here, the returned page below.
        fill = Hydration(lazy, legs["bm25"].hydrate if "bm25" in legs else None)
        reranked, cached = False, 0
        floor = request.min_relevance
        # A depth the request (or its cursor) fixed is kept, and so is reranking
        # when relevance must be known. A skip keeps ``plan.rerank``: the next
        # page's cursor then asks the policy again, which answers the same.
        if plan.rerank and hits and request.rerank_depth is None and floor is None:
            if self.depth_policy.sure(hits):
                plan = replace(plan, rerank_depth=0)
                skipped["rerank"] = (
                    "retrieval is sure: both legs rank the top hit first and its fused score "
                    f"leads by at least {self.depth_policy.gap:g} (SIEVE_RERANK_SKIP_GAP)"
                )
        if plan.rerank and plan.rerank_depth and hits:
            hits = fill(hits, 0, plan.rerank_depth)
            try:
                load_ms += self.warmup.ensure(RERANKER)
                collection = request.collection or self.settings.collection
                hits, cached = self._rerank(
                    request.query, hits, plan.rerank_depth, timings, collection
                )
                reranked = True
            except Exception as exc:  # noqa: BLE001 - any reranker failure degrades to fused order
                degraded["rerank"] = _reason(exc)
                log.warning("rerank degraded, answering in fused order: %s", degraded["rerank"])
        if floor is not None:
            # Only a hit whose relevance is known can pass: none when the rerank
            # degraded (``degraded`` says so), none past the rerank depth. The map
            # is monotone, so what passes is a head of the reranked order.
            hits = [h for h in hits if h.relevance is not None and h.relevance >= floor]
        page = fill(hits, request.offset, request.offset + request.top_k)
        page = page[request.offset : request.offset + request.top_k]
        if fill.ms:
            timings["hydrate"] = fill.ms
        if load_ms:
            timings["load"] = load_ms
        timings["total"] = (time.perf_counter() - started) * 1000
        return SearchResult(
            query=request.query,
            mode=request.mode,
            hits=page,
            timings_ms=timings,
            degraded=list(degraded),
            degraded_reasons=degraded,
            skipped=skipped,
            fusion=used.method if len(legs) > 1 else None,
            fusion_weights=applied.weights
            if len(legs) > 1 and applied.method in fusion.WEIGHTED_METHODS
            else None,
            fusion_source=source if len(legs) > 1 else None,
            fusion_signals=signals,
            fusion_reason=None if signals is None else shipped_adaptive().explain(signals),
            reranked=reranked,
            rerank_window=min(plan.rerank_depth, len(hits)) if reranked else 0,
            rerank_blend=self.blend.weight if reranked and self.blend else None,
            rerank_blend_source=self.blend_source if reranked else None,
            cached_scores=cached,
            offset=request.offset,
            top_k=request.top_k,
            total_window=in_window if floor is None else len(hits),
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
            fusion=self.default_fusion.method,
        )

    def _rerank(
        self, query: str, hits: list[Hit], depth: int, timings: dict[str, float], collection: str
    ) -> tuple[list[Hit], int]:
        """Order the top ``depth`` hits by cross-encoder score (blended with their fused
        rank when a blend is configured); the rest keep fused order."""
        if self.reranker is None:
            raise BackendUnavailable("no reranker is configured", backend="rerank")
        t0 = time.perf_counter()
        head, tail = hits[:depth], hits[depth:]
        # The title gives the cross-encoder the context BEIR-style models were
        # trained with; offsets are mapped back past it into the document.
        built = [rerank_passage(h.title, h.text) for h in head]
        passages = [passage for passage, _ in built]
        if getattr(self.reranker, "reads_passages", False):
            # A reranker in another process that can read the chunk store is told
            # the chunks, not sent their text (search.passages).
            refs = [
                passage_ref(collection, h.chunk_id, p) for h, p in zip(head, passages, strict=True)
            ]
            batch = self.reranker.rerank(query, passages, refs=refs)  # type: ignore[call-arg]
        else:
            batch = self.reranker.rerank(query, passages)
        check_scores(batch, len(head))
        calibration = calibration_of(self.reranker)
        scored = []
        for (_, prefix_len), hit, result in zip(built, head, batch.scores, strict=True):
            start, end = passage_span(prefix_len, len(hit.text), result.start, result.end)
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
        found = self.keyword.candidates(tokens, depth, request.filters)
        hits = collapse(found.hits)
        return LegResult(hits, {"bm25": (time.perf_counter() - t0) * 1000}, found.hydrate)

    def _vector(self, query: str, depth: int, request: SearchRequest) -> LegResult:
        t0 = time.perf_counter()
        vector = self.embedder.embed_query(query)
        t1 = time.perf_counter()
        hits = collapse(self.vector.search(vector, depth, request.filters))
        t2 = time.perf_counter()
        return LegResult(hits, {"embed": (t1 - t0) * 1000, "vector": (t2 - t1) * 1000})

    def vector_skip(self, query: str) -> str | None:
        """Why hybrid search leaves out the vector leg for ``query``, or None: the
        embedder does not serve the query's script (an English model, a Chinese query)."""
        script = script_of(query)
        if self.embedder.serves(script):
            return None
        return (
            f"embedder {self.embedder.model_name} does not serve {script} queries "
            f"({self.embedder.explain_languages()})"
        )

    def fusion_for(self, request: SearchRequest) -> tuple[FusionChoice, str]:
        """The fusion that fuses ``request``'s legs, and where it came from.

        Without a fusion or weights of its own, a request gets the default (the
        collection's from ``sieve tune``, else the settings'). A request that names
        another method gets the configured weights and k: a collection's tuned
        ones belong to its tuned method.
        """
        default = self.default_fusion
        if request.fusion is None and request.weights is None:
            return default, self.fusion_source
        method = request.fusion or default.method
        base = default if method == default.method else None
        weights = base.weights if base else self.settings.fusion_weights
        k = base.k if base else self.settings.rrf_k
        return FusionChoice(method, request.weights or weights, k), "request"

    def _fuse(
        self,
        legs: dict[str, LegResult],
        runs: fusion.Legs | None,
        used: FusionChoice,
        window: int,
        built: int,
    ) -> tuple[list[Hit], set[str], int]:
        """The first ``built`` fused hits, the chunk ids of those whose passage is still
        to be read, and how many hits the ``window`` holds. Fusion ranks every
        candidate (``runs``: both legs' ``(doc id, score)`` lists, when both answered);
        only the hits a stage reads are built."""
        if not legs:
            return [], set(), 0  # every leg was skipped on purpose; ``skipped`` says why
        # doc id -> (its best chunk, 1-based rank) per leg.
        by_leg: dict[str, dict[str, tuple[ScoredChunk, int]]] = {
            name: {c.doc_id: (c, rank) for rank, c in enumerate(leg.hits, start=1)}
            for name, leg in legs.items()
        }
        if runs is None:
            (name,) = legs
            order = [(c.doc_id, c.score) for c in legs[name].hits[:window]]
        else:
            order = fusion.fuse(used.method, list(runs), used.weights, k=used.k)
            order = order[:window]
        fused = len(legs) > 1
        lazy_bm25 = "bm25" in legs and legs["bm25"].hydrate is not None
        bm25_of, vector_of = by_leg.get("bm25", {}), by_leg.get("vector", {})
        lazy: set[str] = set()
        hits: list[Hit] = []
        for rank, (doc_id, score) in enumerate(order[:built], start=1):
            bm25 = bm25_of.get(doc_id)
            vec = vector_of.get(doc_id)
            # Show the passage from the leg that ranked the document higher (BM25's on a tie).
            if bm25 is not None and (vec is None or bm25[1] <= vec[1]):
                chunk = bm25[0]
                if lazy_bm25:
                    lazy.add(chunk.chunk_id)
            else:
                assert vec is not None  # every fused id comes from one of the legs
                chunk = vec[0]
            hits.append(
                Hit(
                    doc_id=doc_id,
                    title=chunk.title,
                    text=chunk.text,
                    chunk_id=chunk.chunk_id,
                    start=chunk.start,
                    end=chunk.end,
                    score=score,
                    rank=rank,
                    metadata=chunk.metadata,
                    bm25=LegScore(bm25[0].score, bm25[1]) if bm25 else None,
                    vector=LegScore(vec[0].score, vec[1]) if vec else None,
                    fused=LegScore(score, rank) if fused else None,
                )
            )
        return hits, lazy, len(order)
