"""A Redis result backend whose waits end on time.

Celery's Redis backend delivers results by pub/sub, so a result wakes its waiter
at once. But ``AsyncResult.get(timeout=t)`` checks its deadline only between
waits on the socket that last up to one second each (``Drainer`` has a fixed
``interval=1``, and ``get(interval=...)`` is not passed down for this backend):
a 50 ms deadline is noticed after a second. A rerank deadline is a fraction of
a second, so this backend waits in slices of a tenth of the timeout (at most
50 ms). A result still arrives the moment it is published; only an expired
deadline is seen sooner.

A connection lost while waiting is tried again once, at once: a Redis restarted
since the last call is back without the caller noticing, and one that is down
fails the wait now with its connection error (the rerank client's "broker"),
where Celery's consumer retries 20 times a second apart and then raises
``RuntimeError`` ("the Celery application must be restarted"), which it need
not be: the next call connects afresh.

``workers.app.celery_init_app`` selects it with Celery's ``<class>+<url>`` form of
``result_backend`` for ``redis://`` and ``rediss://`` URLs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery.backends.redis import RedisBackend, ResultConsumer

log = logging.getLogger(__name__)

# How late a missed deadline may be noticed, at most.
MAX_SLICE_S = 0.05
MIN_SLICE_S = 0.001
BACKEND = f"{__name__}:DeadlineRedisBackend"


class _DeadlineResultConsumer(ResultConsumer):
    def drain_events_until(
        self, p: Any, timeout: float | None = None, on_interval: Any = None
    ) -> Any:
        interval = 1.0 if timeout is None else min(max(timeout / 10, MIN_SLICE_S), MAX_SLICE_S)
        return self.drainer.drain_events_until(
            p, timeout=timeout, interval=interval, on_interval=on_interval
        )

    @contextmanager
    def reconnect_on_error(self) -> Iterator[None]:
        try:
            yield
        except TimeoutError:
            raise  # a poll that timed out, not a lost connection (as Celery's)
        except self._connection_errors:
            # One attempt, no retries (see the module doc); its error is the caller's.
            self._reconnect_pubsub()

    def cancel_for(self, task_id: str) -> None:
        # Also runs from AsyncResult.__del__: with the Redis gone there is no
        # subscription left to end (a reconnect subscribes afresh), and an error
        # raised there is only printed as "Exception ignored".
        try:
            super().cancel_for(task_id)
        except self._connection_errors as exc:
            log.debug("result store unreachable, not unsubscribing %s: %s", task_id, exc)


class DeadlineRedisBackend(RedisBackend):
    """Celery's ``RedisBackend``, with ``get(timeout=...)`` accurate to ``MAX_SLICE_S``."""

    ResultConsumer = _DeadlineResultConsumer


def backend_url(url: str) -> str:
    """``url`` with this backend's class in front, if it is a Redis URL; else ``url``."""
    if url.split("://", 1)[0] in ("redis", "rediss"):
        return f"{BACKEND}+{url}"
    return url
