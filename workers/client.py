"""``CeleryReranker``: the ``Reranker`` that sends work to GPU workers on the rerank queue.

Every call has a deadline (``rerank_timeout_s``, or the caller's if sooner): the
task is sent with that expiry and that deadline (the worker drops it, queued or
between batches, once it has passed), and the client waits that long for the
result. Whatever goes wrong (a late worker, no worker, a broker that is down or
does not answer, a task that failed) is raised as
``BackendUnavailable(backend="rerank", reason=...)`` and the pipeline degrades to
the fused order. The call ends within ~50 ms of the deadline whatever Redis
does: sending and waiting run on threads of the client's own
(``workers.bounded``), and the caller stops waiting for them at the deadline.

``model_key`` (what the pair-score cache files scores under) starts as the
settings' ``model@revision:max_length`` (``default`` for an unset revision) and
becomes the key the workers report (the weights' fingerprint when no revision is
pinned). The cache reads the key *before* calling ``rerank`` and files the
scores under it, so:

- calls made before any worker answered are returned as they are: their scores
  go under the settings' key, which names the configured model (exactly the
  workers' key when ``SIEVE_RERANK_REVISION`` is pinned, as it should be in
  production), and the first reply's key is adopted;
- a later reply whose key differs from the one this client reported when the
  call began (the workers got another model, or a rollout is half done) is not
  returned: the call raises ``BackendUnavailable(reason="model changed")`` so
  that no score is filed under the wrong model, and the client follows the new
  key from the next call on. A model swap costs one degraded query per client,
  and a mixed fleet degrades (visibly) rather than mixing scores.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from functools import cached_property, partial
from typing import Any

import redis
from celery import Celery
from celery.exceptions import TaskRevokedError
from celery.exceptions import TimeoutError as CeleryTimeoutError
from kombu.exceptions import OperationalError

from search.config import Settings
from search.errors import BackendUnavailable, InvalidRequest, ModelNotFound
from search.models import LocatedModel, locate
from search.passages import PassageRef
from search.rerank.base import check_scores, left_s, sigmoid
from search.rerank.calibration import Calibration, load_calibration
from search.rerank.cross_encoder import key_suffix
from search.rerank.pairs import serving_max_length
from search.types import RerankBatch, RerankScore
from workers.bounded import BoundedCalls, DeadlinePassed
from workers.names import RERANK_TASK
from workers.settings import WorkerSettings
from workers.tasks import RerankExpired

log = logging.getLogger(__name__)

# The broker or the result store is unreachable (kombu wraps most of redis-py's).
_BROKER_ERRORS = (OperationalError, redis.ConnectionError, redis.TimeoutError, OSError)


class CeleryReranker:
    """Scores pairs on the Celery workers that serve ``workers.rerank_queue``.

    ``app`` comes from ``workers.app.celery_init_app`` (no connection yet); this
    holds it and never builds one. Thread-safe: each call runs on a thread of its
    own pool (``workers.bounded``), Celery keeps one result consumer per thread,
    and the producer pool is shared.
    """

    # The workers read the passages of indexed chunks from the shared chunk store
    # (``workers.passages``): the pipeline sends references, not text.
    reads_passages = True

    def __init__(self, app: Celery, settings: Settings, workers: WorkerSettings) -> None:
        self.app = app
        self.settings = settings
        self.queue = workers.rerank_queue
        self._reported_key: str | None = None
        self._calls = BoundedCalls("sieve-rerank-call")
        # Why the last call got no answer ("" once one did): what /readyz and the
        # search page say about a Celery reranker (search.rerank.status).
        self.last_error = ""

    @cached_property
    def _located(self) -> LocatedModel | None:
        """The configured model's files on this machine (offline), or None.

        The workers hold the model; this process finds the same files when the
        models folder is shared, so the same fingerprint and card.
        """
        s = self.settings
        try:
            return locate(s.rerank_model, s.rerank_models_dir, revision=s.rerank_revision)
        except ModelNotFound:
            return None

    @cached_property
    def calibration(self) -> Calibration | None:
        """The configured model's calibration, read once (None: hits carry no ``relevance``)."""
        return load_calibration(self._located) if self._located is not None else None

    @property
    def model_key(self) -> str:
        """The workers' model key once one answered, else the settings' (see the module doc)."""
        if self._reported_key is not None:
            return self._reported_key
        s = self.settings
        revision = s.rerank_revision or "default"
        folder = self._located.folder if self._located is not None else None
        length = serving_max_length(s.rerank_max_length, folder)
        return f"{s.rerank_model}@{revision}:{length}{key_suffix(s.rerank_runtime)}"

    def rerank(
        self,
        query: str,
        passages: Sequence[str],
        *,
        deadline: float | None = None,
        max_doc_tokens: int | None = None,
        refs: Sequence[PassageRef | None] | None = None,
    ) -> RerankBatch:
        """One score per passage, in order; ``BackendUnavailable`` when no worker answers in time.

        See ``_rerank``; this keeps ``last_error`` up to date.
        """
        try:
            batch = self._rerank(
                query, passages, deadline=deadline, max_doc_tokens=max_doc_tokens, refs=refs
            )
        except BackendUnavailable as exc:
            self.last_error = str(exc)
            raise
        self.last_error = ""
        return batch

    def _rerank(
        self,
        query: str,
        passages: Sequence[str],
        *,
        deadline: float | None = None,
        max_doc_tokens: int | None = None,
        refs: Sequence[PassageRef | None] | None = None,
    ) -> RerankBatch:
        """One score per passage, in order; ``BackendUnavailable`` when no worker answers in time.

        The call ends at the configured timeout, or at ``deadline`` if sooner,
        whatever the broker does (see ``workers.bounded``). A passage with a ref
        (``search.passages``) travels as its chunk id and digest and the worker
        reads it; one the worker could not read is sent again as text, in a
        second task within the same deadline.

        ``timings_ms``: ``queue`` (sent until a worker started it), ``model`` (the
        worker's tokenising and forward passes), ``read`` (the worker reading
        passages), ``roundtrip`` (the whole call).
        """
        if isinstance(passages, str) or not all(isinstance(p, str) for p in passages):
            raise InvalidRequest("passages must be a sequence of strings")
        if not passages:
            return RerankBatch([])
        if refs is not None and len(refs) != len(passages):
            raise InvalidRequest("refs must have one entry (or None) per passage")
        timeout_s = self.settings.rerank_timeout_s
        left = left_s(deadline)
        if left is not None:
            timeout_s = min(timeout_s, left)
        # None while no worker has answered: then the caller used the settings' key.
        reported_at_start = self._reported_key
        sent_at, started = time.time(), time.perf_counter()
        ends = time.monotonic() + timeout_s
        sent = threading.Event()
        try:
            value, succeeded, state = self._calls.run(
                partial(self._roundtrip, query, list(passages), ends, sent, max_doc_tokens, refs),
                ends,
            )
        except (DeadlinePassed, CeleryTimeoutError) as exc:
            if not sent.is_set():  # the broker took the whole deadline to accept it
                raise BackendUnavailable(
                    f"rerank broker did not answer within {timeout_s:.3g}s",
                    backend="rerank",
                    reason="broker",
                    timeout_s=timeout_s,
                ) from exc
            raise BackendUnavailable(
                f"no rerank result within {timeout_s:.3g}s",
                backend="rerank",
                reason="deadline",
                timeout_s=timeout_s,
            ) from exc
        except _BROKER_ERRORS as exc:
            raise BackendUnavailable(
                f"rerank broker unreachable: {exc}", backend="rerank", reason="broker"
            ) from exc
        roundtrip_ms = (time.perf_counter() - started) * 1e3
        if not succeeded:
            # ``value`` is the task's exception, rebuilt from its JSON form. A
            # revoked task expired in the queue, an expired one on the worker:
            # either way the deadline passed on the way.
            reason = (
                "deadline"
                if isinstance(value, TaskRevokedError | RerankExpired)
                else str(value) or type(value).__name__
            )
            raise BackendUnavailable(
                f"rerank task failed: {reason}",
                backend="rerank",
                reason=reason,
                error=type(value).__name__,
                state=state,
            )
        return self._batch(value, len(passages), reported_at_start, sent_at, roundtrip_ms)

    def _roundtrip(
        self,
        query: str,
        passages: list[str],
        ends: float,
        sent: threading.Event,
        max_doc_tokens: int | None = None,
        refs: Sequence[PassageRef | None] | None = None,
    ) -> tuple[Any, bool, str]:
        """Send the task and wait for its result until ``ends`` (on a thread of ``self._calls``);
        then the passages the worker could not read, as text."""
        value, succeeded, state = self._send(query, passages, ends, sent, max_doc_tokens, refs)
        unread = value.get("unread") if succeeded and isinstance(value, dict) else None
        if not unread:
            return value, succeeded, state
        try:
            texts = [passages[int(i)] for i in unread]
        except (TypeError, ValueError, IndexError) as exc:
            raise BackendUnavailable(
                f"malformed rerank result: {exc}", backend="rerank", reason="malformed"
            ) from exc
        log.info("rerank worker could not read %d passages: sending them as text", len(texts))
        again, succeeded, state = self._send(query, texts, ends, sent, max_doc_tokens, None)
        if not succeeded:
            return again, succeeded, state
        return merge_replies(value, again), True, state

    def _send(
        self,
        query: str,
        passages: list[str],
        ends: float,
        sent: threading.Event,
        max_doc_tokens: int | None,
        refs: Sequence[PassageRef | None] | None,
    ) -> tuple[Any, bool, str]:
        """One task: sent, and its result waited for until ``ends``."""
        left = max(0.0, ends - time.monotonic())
        kwargs: dict[str, Any] = {"deadline_at": time.time() + left}
        if max_doc_tokens is not None:  # only when asked for: older workers lack the option
            kwargs["max_doc_tokens"] = max_doc_tokens
        sent_passages: list[str | None] = list(passages)
        if refs is not None and any(ref is not None for ref in refs):
            # Referenced passages travel as [collection, chunk id, digest]; their text does not.
            kwargs["refs"] = [
                None if r is None else [r.collection, r.chunk_id, r.digest] for r in refs
            ]
            sent_passages = [
                None if r is not None else p for p, r in zip(passages, refs, strict=True)
            ]
        result = self.app.send_task(
            RERANK_TASK,
            args=(query, sent_passages),
            # The worker drops a task still queued at the deadline (Celery's
            # expiry) and stops one it is running at the next batch (deadline_at).
            # Both are wall-clock times: client and worker clocks must agree to
            # well under the deadline.
            kwargs=kwargs,
            queue=self.queue,
            expires=left,
        )
        sent.set()
        try:
            # Pub/sub: a result wakes this at once; the deadline is honoured to
            # within workers.results.MAX_SLICE_S.
            value = result.get(timeout=max(0.0, ends - time.monotonic()), propagate=False)
        except CeleryTimeoutError:
            _give_up(result)
            raise
        return value, result.successful(), result.state

    def close(self) -> None:
        """Stop the calls' threads (those still waiting end at their deadline)."""
        self._calls.close()

    def _batch(
        self,
        value: Any,
        expected: int,
        reported_at_start: str | None,
        sent_at: float,
        roundtrip_ms: float,
    ) -> RerankBatch:
        try:
            rows = [(float(x), int(a), int(b)) for x, a, b in value["scores"]]
            model_ms = float(value["model_ms"])
            worker_key = str(value["model_key"])
            started_at = float(value["started_at"])
            tokens = int(value.get("tokens", 0))  # absent from older workers' replies
            read_ms = float(value.get("read_ms", 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise BackendUnavailable(
                f"malformed rerank result: {exc}", backend="rerank", reason="malformed"
            ) from exc
        check_scores(rows, expected, "rerank", source="worker", reason="malformed")
        self._reported_key = worker_key
        if reported_at_start is not None and worker_key != reported_at_start:
            log.warning("rerank model changed: %s -> %s", reported_at_start, worker_key)
            raise BackendUnavailable(
                f"rerank workers now serve {worker_key}, not {reported_at_start}",
                backend="rerank",
                reason="model changed",
            )
        # Wall clocks of two hosts: clamp, so skew cannot give a negative wait or
        # one longer than the part of the round trip the model did not use.
        queue_ms = min(max((started_at - sent_at) * 1e3, 0.0), max(roundtrip_ms - model_ms, 0.0))
        return RerankBatch(
            [RerankScore(logit=x, score=sigmoid(x), start=a, end=b) for x, a, b in rows],
            timings_ms={
                "queue": queue_ms,
                "model": model_ms,
                **({"read": read_ms} if read_ms else {}),
                "roundtrip": roundtrip_ms,
            },
            tokens=tokens,
        )


def merge_replies(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """``first`` (with ``unread`` positions scored None) completed by ``second``'s scores
    of those positions, in order; model time, read time and tokens are added."""
    rows = list(first["scores"])
    for position, row in zip(first["unread"], second["scores"], strict=True):
        rows[int(position)] = row
    merged = dict(first, scores=rows, unread=[])
    for name in ("model_ms", "read_ms", "tokens"):
        merged[name] = first.get(name, 0) + second.get(name, 0)
    if second.get("model_key") != first.get("model_key"):
        merged["model_key"] = second.get("model_key")  # _batch then reports the change
    return merged


def _give_up(result: Any) -> None:
    """Best effort: stop a task nobody waits for, and stop listening for its result."""
    try:
        result.revoke()  # skipped if still queued; a running one finishes (no kill)
        result.forget()
    except _BROKER_ERRORS as exc:
        log.debug("could not revoke rerank task %s: %s", result.id, exc)
