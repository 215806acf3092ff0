"""``Warmup``: the one home of "load what the engine loads lazily".

The engine's heavy parts load on first use, so constructing a ``SearchEngine``
stays free and safe before a fork (docs/style.md). A server wants the opposite
at start-up: every part loaded before it says it is ready, so that no user's
first query pays seconds for it. ``Warmup`` serves both:

- ``start()`` loads every part on a background thread (``sieve serve`` calls it
  in each gunicorn worker, after the fork), while the worker goes on answering
  ``/healthz`` and ``/readyz``; ``warming`` says what is still loading.
- ``ensure(part)`` is what a request calls before it uses a part: free once the
  part is loaded, else it loads it (or waits for the thread that is loading it)
  and returns the milliseconds that took, which the pipeline reports as
  ``timings_ms["load"]`` so that a load inside a request is never hidden.

The parts: the Chinese dictionary (jieba, for the BM25 analyser), the embedder,
and the reranker when it has a model in this process (not the Celery client,
whose model loads on the workers). A part that fails to load is reported in
``state()`` and logged; whether that makes a service unready is the caller's
rule (the API's ``/readyz``: a missing reranker only degrades results).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from search.text.analyze import warm_up as warm_up_dictionary

log = logging.getLogger(__name__)

DICTIONARY = "chinese dictionary"
EMBEDDER = "embedder"
RERANKER = "reranker"
OK = "ok"
LOADING = "loading"
WARM_TEXT = "warm up"  # what the first forward passes score


def local_model(reranker: object) -> Any:
    """The first reranker in the wrapper chain with a ``warm_up`` (a model here), or None.

    ``CachingReranker`` has none (it loads nothing, and its cache must not keep
    the warm-up's score); ``BoundedReranker`` and ``CrossEncoderReranker`` do;
    the Celery client does not (its model is remote).
    """
    for _ in range(8):
        if reranker is None:
            return None
        if callable(getattr(reranker, "warm_up", None)):
            return reranker
        reranker = getattr(reranker, "inner", None)
    return None


def _first_pass(load: Callable[[], None], run: Callable[[], object] | None) -> Callable[[], None]:
    """``load``, then one tiny call of the model: the first forward pass pays one-time
    set-up (kernels, allocator) that measured ~0.3 s on the first query otherwise."""

    def warm() -> None:
        load()
        if run is not None:
            run()

    return warm


def engine_parts(embedder: object, reranker: object) -> dict[str, Callable[[], None]]:
    """The loaders of an engine's parts, in the order a warm-up runs them (cheapest first).

    An embedder or reranker without ``warm_up`` has nothing to load (a test's
    stand-in, a remote model) and is no part.
    """
    parts: dict[str, Callable[[], None]] = {DICTIONARY: warm_up_dictionary}
    embedder_warm_up = getattr(embedder, "warm_up", None)
    if callable(embedder_warm_up):
        embed = getattr(embedder, "embed_query", None)
        parts[EMBEDDER] = _first_pass(
            embedder_warm_up, (lambda: embed(WARM_TEXT)) if callable(embed) else None
        )
    owner = local_model(reranker)
    if owner is not None:
        score = getattr(owner, "rerank", None)
        parts[RERANKER] = _first_pass(
            owner.warm_up, (lambda: score(WARM_TEXT, [WARM_TEXT])) if callable(score) else None
        )
    return parts


class Warmup:
    """Loads named parts once each, in the background or on demand; thread-safe."""

    def __init__(self, parts: Mapping[str, Callable[[], None]]) -> None:
        self._parts = dict(parts)
        self._locks = {name: threading.Lock() for name in self._parts}
        self._outcome: dict[str, str] = {}  # part -> "ok" or "error: ..." (last attempt)
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts this warm-up loads, in order."""
        return tuple(self._parts)

    def ensure(self, part: str) -> float:
        """Load ``part`` unless it is loaded; the milliseconds spent loading or waiting.

        0.0 when it was already loaded (or is not one of the parts). Raises the
        part's own error when it cannot load; the next call tries again, as a
        lazy load would.
        """
        if part not in self._parts or self._outcome.get(part) == OK:
            return 0.0
        started = time.perf_counter()
        with self._locks[part]:
            if self._outcome.get(part) != OK:
                self._load(part)
        return (time.perf_counter() - started) * 1000

    def start(self) -> threading.Thread:
        """Load every part on a daemon thread (once); returns that thread."""
        with self._guard:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self.run, name="sieve-warm-up", daemon=True
                )
                self._thread.start()
            return self._thread

    def run(self) -> dict[str, str]:
        """Load every part here, in order; a part's failure is logged, not raised."""
        started = time.perf_counter()
        for part in self._parts:
            try:
                self.ensure(part)
            except Exception:  # noqa: BLE001 - recorded in state() and logged; the rest still load
                continue
        log.info("warm-up done in %.2f s: %s", time.perf_counter() - started, self.state())
        return self.state()

    @property
    def started(self) -> bool:
        """Whether ``start`` was called (a warm-up that never started is not "warming")."""
        return self._thread is not None

    def warming(self) -> tuple[str, ...]:
        """The parts a started warm-up has not finished with yet (none when not started)."""
        if not self.started:
            return ()
        return tuple(part for part in self._parts if part not in self._outcome)

    def state(self) -> dict[str, str]:
        """Each part: "ok", "error: ...", "loading" (a started warm-up's), or "lazy"
        (not loaded yet; it loads on first use)."""
        pending = LOADING if self.started else "lazy"
        return {part: self._outcome.get(part, pending) for part in self._parts}

    def _load(self, part: str) -> None:
        started = time.perf_counter()
        try:
            self._parts[part]()
        except Exception as exc:
            self._outcome[part] = f"error: {type(exc).__name__}: {exc}"[:800]
            log.error("%s not loaded: %s", part, exc)
            raise
        self._outcome[part] = OK
        log.info("%s loaded in %.2f s", part, time.perf_counter() - started)
