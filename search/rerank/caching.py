"""``CachingReranker``: any ``Reranker`` in front of a pair-score store.

One ``get_many`` answers what the store knows, only the misses reach the inner
reranker, and concurrent identical misses in one process are scored once
(single-flight). The store (``search.scores``) fails open, so a cache that is
down or slow costs latency, never an answer.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from search.errors import BackendUnavailable, ConfigError
from search.passages import PassageRef
from search.rerank.base import Reranker, check_scores, sigmoid
from search.rerank.calibration import Calibration, calibration_of
from search.rerank.pairs import MAX_DOC_TOKENS, doc_token_limit
from search.scores import CachedScore, ScoreStore, pair_keys
from search.types import RerankBatch, RerankScore


class CachingReranker:
    """A ``Reranker`` answering from a ``ScoreStore``; only misses go to ``inner``.

    Single-flight: a miss another thread of this reranker is already scoring is not
    scored again; the thread waits for it (at most ``wait_timeout_s``) and takes its
    result. If that owner fails, its waiters raise the owner's exception instead of
    retrying: the same pairs at the same moment meet the same down or late reranker,
    and a retry would double their latency before the pipeline degrades. A waiter
    that times out raises ``BackendUnavailable``.

    Every score returned is ``sigmoid(logit)`` of ``search.rerank.base``, fresh or cached, so a
    repeated query returns identical numbers.
    """

    def __init__(
        self, inner: Reranker, store: ScoreStore, ttl_s: int, *, wait_timeout_s: float = 30.0
    ) -> None:
        if ttl_s < 1:
            raise ConfigError("SIEVE_CACHE_TTL_S must be >= 1", value=ttl_s)
        if not wait_timeout_s > 0:
            raise ConfigError("wait_timeout_s must be > 0", value=wait_timeout_s)
        self.inner, self.store, self.ttl_s = inner, store, ttl_s
        self.wait_timeout_s = wait_timeout_s
        self._inflight: dict[str, Future[CachedScore]] = {}
        self._inflight_lock = threading.Lock()
        self._waiters = 0

    @property
    def calibration(self) -> Calibration | None:
        """The inner reranker's calibration, if it has one."""
        return calibration_of(self.inner)

    @property
    def model_key(self) -> str:
        """The inner reranker's, read on every call (it may be known only after loading)."""
        return self.inner.model_key

    @property
    def reads_passages(self) -> bool:
        """Whether the inner reranker reads passages by reference (``search.passages``)."""
        return bool(getattr(self.inner, "reads_passages", False))

    @property
    def waiters(self) -> int:
        """Calls now waiting for an identical rerank that another call is scoring."""
        with self._inflight_lock:
            return self._waiters

    def rerank(
        self,
        query: str,
        passages: Sequence[str],
        *,
        deadline: float | None = None,
        max_doc_tokens: int | None = None,
        refs: Sequence[PassageRef | None] | None = None,
    ) -> RerankBatch:
        """Scores in the passages' order; ``cached`` counts the positions the store answered.

        ``deadline`` goes to the inner reranker and bounds the wait for an identical
        rerank; ``max_doc_tokens`` goes to it too, and a score cut to fewer tokens
        than the default is cached under its own key. ``refs`` (one per passage, or
        None) go with the misses to an inner reranker that ``reads_passages``: the
        pairs the store answered are never sent anywhere.
        """
        started = time.perf_counter()
        limit = doc_token_limit(max_doc_tokens)
        # The default limit keeps the plain model key, so existing entries stay valid.
        key_base = self.model_key if limit == MAX_DOC_TOKENS else f"{self.model_key}#{limit}"
        keys = pair_keys(key_base, query, passages)
        unique = dict(zip(keys, passages, strict=True))  # a duplicate is looked up once
        ref_of = (
            dict(zip(keys, refs, strict=True))
            if refs is not None and self.reads_passages
            else None
        )
        found = dict(zip(unique, self.store.get_many(list(unique)), strict=True))
        results = {key: value for key, value in found.items() if value is not None}
        timings = {"cache": (time.perf_counter() - started) * 1000}
        owned: dict[str, Future[CachedScore]] = {}
        tokens = 0  # the inner reranker's, for the scores it computed
        waiting: dict[str, Future[CachedScore]] = {}
        with self._inflight_lock:
            for key in (key for key in unique if key not in results):  # in passage order
                if key in self._inflight:
                    waiting[key] = self._inflight[key]
                else:
                    owned[key] = self._inflight[key] = Future()
            self._waiters += bool(waiting)
        try:
            if owned:
                fresh, tokens = self._score(
                    query, owned, unique, timings, deadline, max_doc_tokens, ref_of
                )
                results.update(fresh)
            if waiting:
                started = time.perf_counter()
                wait_until = time.monotonic() + self.wait_timeout_s
                if deadline is not None:
                    wait_until = min(wait_until, deadline)
                results.update(self._wait(waiting, wait_until))
                timings["wait"] = (time.perf_counter() - started) * 1000
        finally:
            if waiting:
                with self._inflight_lock:
                    self._waiters -= 1
        scores = [
            RerankScore(logit=v.logit, score=sigmoid(v.logit), start=v.start, end=v.end)
            for v in (results[key] for key in keys)
        ]
        return RerankBatch(
            scores,
            timings,
            cached=sum(found[key] is not None for key in keys),
            tokens=tokens,
        )

    def _wait(
        self, waiting: dict[str, Future[CachedScore]], wait_until: float
    ) -> dict[str, CachedScore]:
        """The results other calls are scoring; raises the owner's exception if it failed."""
        out: dict[str, CachedScore] = {}
        for key, future in waiting.items():
            try:
                out[key] = future.result(max(0.0, wait_until - time.monotonic()))
            except TimeoutError as exc:
                if future.done():
                    raise  # the owner's own TimeoutError
                raise BackendUnavailable(
                    "no score by the deadline waiting for an identical rerank",
                    backend="rerank",
                    timeout_s=self.wait_timeout_s,
                ) from exc
        return out

    def _release(self, owned: dict[str, Future[CachedScore]]) -> None:
        with self._inflight_lock:
            for key in owned:
                del self._inflight[key]

    def _score(
        self,
        query: str,
        owned: dict[str, Future[CachedScore]],
        unique: dict[str, str],
        timings: dict[str, float],
        deadline: float | None,
        max_doc_tokens: int | None,
        ref_of: dict[str, PassageRef | None] | None = None,
    ) -> tuple[dict[str, CachedScore], int]:
        """The inner reranker's scores of the ``owned`` keys, and the tokens it read."""
        keys = list(owned)
        # Passed only when asked for: a reranker that predates the option still works.
        options: dict[str, Any] = {}
        if max_doc_tokens is not None:
            options["max_doc_tokens"] = max_doc_tokens
        if ref_of is not None:
            options["refs"] = [ref_of[key] for key in keys]
        try:
            batch = self.inner.rerank(
                query, [unique[key] for key in keys], deadline=deadline, **options
            )
            check_scores(batch, len(keys))
            fresh = {
                key: CachedScore(float(s.logit), int(s.start), int(s.end))
                for key, s in zip(keys, batch.scores, strict=True)
            }
        except BaseException as exc:
            # Nothing is cached. A KeyboardInterrupt belongs to this thread, not the waiters.
            shared = (
                exc
                if isinstance(exc, Exception)
                else BackendUnavailable(
                    f"an identical rerank was interrupted ({type(exc).__name__})", backend="rerank"
                )
            )
            for future in owned.values():
                future.set_exception(shared)
            self._release(owned)
            raise
        for key, future in owned.items():
            future.set_result(fresh[key])
        # Until the write lands the (finished) futures stay registered, so a thread
        # that has just missed the store takes this result instead of rescoring.
        try:
            written = time.perf_counter()
            # A non-finite logit would read back as garbage: serve it, don't keep it.
            self.store.set_many(
                {k: v for k, v in fresh.items() if math.isfinite(v.logit)}, self.ttl_s
            )
            timings["cache"] += (time.perf_counter() - written) * 1000
            timings.update((k, v) for k, v in batch.timings_ms.items() if k != "cache")
        finally:
            self._release(owned)
        return fresh, batch.tokens
