"""A Redis result backend whose waits end on time.

Celery's Redis backend delivers results by pub/sub, so a result wakes its waiter
at once. But ``AsyncResult.get(timeout=t)`` checks its deadline only between
waits on the socket that last up to one second each (``Drainer`` has a fixed
``interval=1``, and ``get(interval=...)`` is not passed down for this backend):
a 50 ms deadline is noticed after a second. A rerank deadline is a fraction of
a second, so this backend waits in slices of a tenth of the timeout (at most
50 ms). A result still arrives the moment it is published; only an expired
deadline is seen sooner.

``workers.app.celery_init_app`` selects it with Celery's ``<class>+<url>`` form of
``result_backend`` for ``redis://`` and ``rediss://`` URLs.
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend, ResultConsumer

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


class DeadlineRedisBackend(RedisBackend):
    """Celery's ``RedisBackend``, with ``get(timeout=...)`` accurate to ``MAX_SLICE_S``."""

    ResultConsumer = _DeadlineResultConsumer


def backend_url(url: str) -> str:
    """``url`` with this backend's class in front, if it is a Redis URL; else ``url``."""
    if url.split("://", 1)[0] in ("redis", "rediss"):
        return f"{BACKEND}+{url}"
    return url
