"""Broker and result-store calls that end by a deadline, whatever Redis does.

A Redis that refuses connections fails a call at once. One that accepts them
but does not answer (stopped, swapping, a half-open connection) holds every
read for ``workers.settings.SOCKET_TIMEOUT_S``, and kombu's publish retries and
Celery's reconnects multiply that: a rerank call against a 2 s deadline took
20 s with the broker frozen. Socket timeouts cannot be per call, so the Celery
clients (``workers.client``, ``workers.index_client``) make those calls on a few
threads of their own and wait for each until its deadline, no longer. A call
still running then goes on in the background until a socket timeout or a reply
ends it (a publish may still land: a task carries its own deadline, and an index
job is idempotent); a call still queued at its deadline never starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

T = TypeVar("T")


class DeadlinePassed(Exception):
    """The call did not finish by its deadline (it may still finish in the background)."""


class BoundedCalls:
    """Runs calls on a small thread pool; ``run`` returns or raises by the deadline.

    Threads start on demand, up to ``max_workers``: more than the calls a process
    has in flight, or calls queue behind slow ones (a rerank call holds its thread
    until the result or the deadline). Celery's result consumer is per thread, so
    each of these threads gets its own.
    """

    def __init__(self, name: str, max_workers: int = 32) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)

    def run(self, fn: Callable[[], T], deadline: float) -> T:
        """``fn()``'s result or exception, or ``DeadlinePassed`` at ``deadline`` (monotonic)."""
        future = self._pool.submit(_unless_late, fn, deadline)
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            future.cancel()  # still queued: it never runs
            raise DeadlinePassed(f"no answer within the deadline from {fn!r}") from None

    def close(self) -> None:
        """Stop taking calls; those running finish in the background."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _unless_late(fn: Callable[[], T], deadline: float) -> T:
    # Queued behind calls stuck on a frozen Redis: nobody waits for this one any more.
    if time.monotonic() >= deadline:
        raise DeadlinePassed("the deadline passed before the call started")
    return fn()
