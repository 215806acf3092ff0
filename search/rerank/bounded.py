"""``BoundedReranker``: the caller never waits for a reranker past its deadline.

An in-process cross-encoder runs on this process's cores; without a bound one
huge request (a 5 MB document, a thousand passages) holds the model while every
search behind it waits. This wrapper gives each call a deadline (the configured
timeout, or the caller's if sooner), runs the call on a small pool, and stops
waiting at the deadline with ``BackendUnavailable``, as the Celery client does.
The reranker it wraps is told the deadline too: the cross-encoder waits for the
model at most that long and stops between batches once it has passed, so work
nobody waits for is dropped instead of finished.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from search.errors import BackendUnavailable, ConfigError, ModelIncompatible, ModelNotFound
from search.rerank.base import Reranker
from search.rerank.calibration import Calibration, calibration_of
from search.types import RerankBatch


class BoundedReranker:
    """A ``Reranker`` whose every call answers, or fails, by its deadline."""

    def __init__(self, inner: Reranker, timeout_s: float, *, workers: int = 8) -> None:
        if not timeout_s > 0:
            raise ConfigError("SIEVE_RERANK_TIMEOUT_S must be > 0", value=timeout_s)
        self.inner, self.timeout_s = inner, timeout_s
        # Threads, not a process: the model and its lock live in this process.
        # A thread whose caller gave up stays busy at most until the reranker's
        # next deadline check, so a few suffice.
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rerank")
        self._lock = threading.Lock()
        self.expired = 0  # calls whose caller stopped waiting at the deadline
        self._loaded = False

    @property
    def calibration(self) -> Calibration | None:
        """The inner reranker's calibration, if it has one."""
        return calibration_of(self.inner)

    @property
    def model_key(self) -> str:
        """The inner reranker's."""
        return self.inner.model_key

    def warm_up(self) -> None:
        """Load the inner reranker's model now, if it has one to load (once)."""
        if self._loaded:
            return
        warm = getattr(self.inner, "warm_up", None)
        if callable(warm):
            warm()
        self._loaded = True

    def rerank(
        self,
        query: str,
        passages: Sequence[str],
        *,
        deadline: float | None = None,
        max_doc_tokens: int | None = None,
    ) -> RerankBatch:
        """The inner reranker's answer, or ``BackendUnavailable`` at the deadline.

        Loading the model is start-up work, not a slow answer: it happens before
        the deadline starts (as the embedder's does), once.
        """
        try:
            self.warm_up()
        except (ModelNotFound, ModelIncompatible) as exc:
            raise BackendUnavailable(str(exc), backend="rerank") from exc
        own = time.monotonic() + self.timeout_s
        deadline = own if deadline is None else min(deadline, own)
        # Passed only when asked for: a reranker that predates the option still works.
        options = {} if max_doc_tokens is None else {"max_doc_tokens": max_doc_tokens}
        future = self._pool.submit(self.inner.rerank, query, passages, deadline=deadline, **options)
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            with self._lock:
                self.expired += 1
            raise BackendUnavailable(
                f"rerank missed its {self.timeout_s:g} s deadline",
                backend="rerank",
                timeout_s=self.timeout_s,
            ) from None

    def close(self) -> None:
        """Stop the pool; calls in flight finish (or stop at their deadline)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
