"""Rate limiting: ``SIEVE_RATE_LIMIT`` per known key (per client address otherwise).

The counts live in the cache Redis when ``SIEVE_CACHE_URL`` is set, so that every
API process shares them. When that Redis is down the same limits are counted in
this process's memory (Flask-Limiter's in-memory fallback) until it answers
again: each API process then counts on its own, so N gunicorn workers admit up
to N times the limit for a while, but nothing is ever unlimited. Flask-Limiter
tries the Redis again after 1, 2, 4, ... 32 s of fallback (then from 1 s again)
and goes back to it as soon as it answers.

An outage is one warning in the log (Flask-Limiter's "Rate limit storage
unreachable - falling back to in-memory storage", and an info line when it
recovers), not a traceback per request; ``/metrics`` shows
``sieve_rate_limit_fallback`` (1 while counting in memory) and
``sieve_rate_limit_outages_total``.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from flask import Flask, Response, request
from flask_limiter import Limit, Limiter
from flask_limiter.util import get_remote_address
from redis.backoff import NoBackoff
from redis.retry import Retry

from api.auth import KeyRing, presented_key
from api.errors import own_retry_after
from api.metrics import Metrics

# Probes and scrapes must keep working while a client is being throttled.
UNLIMITED = {"ops.healthz", "ops.readyz", "ops.metrics", "static"}
# A rate-limit check sits in front of every request: a Redis that does not answer
# within this long is treated as down (and the in-memory limits take over).
REDIS_TIMEOUT_S = 1.0


def install_rate_limit(
    app: Flask, limit: str, cache_url: str, keys: KeyRing, metrics: Metrics
) -> Limiter:
    """Limit all but probes and preflights to ``limit``, in ``cache_url``'s Redis if set."""

    def bucket() -> str:
        key = presented_key()
        # Unknown keys share their address's bucket: inventing keys buys no quota.
        if key is not None and keys.authenticate(key) is not None:
            return "key:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:24]
        return "ip:" + (get_remote_address() or "unknown")

    # Registered before the limiter, so it runs after the limiter's own hook
    # (Flask runs after_request hooks last-registered first).
    app.after_request(_retry_after_only_where_useful)
    # Typed loosely on purpose: Flask-Limiter's annotations say str and int, its
    # code passes the options to redis-py and takes Limit objects as fallbacks.
    options: dict[str, Any] = {}
    fallback: list[Any] = []
    if cache_url:
        options = {
            "socket_timeout": REDIS_TIMEOUT_S,
            "socket_connect_timeout": REDIS_TIMEOUT_S,
            # redis-py 6 retries 3 times with backoff of up to seconds by default:
            # in front of every request, that is the outage's cost per request.
            "retry": Retry(NoBackoff(), 0),
        }
        # Redis down: the same limit, counted in this process (see the module doc),
        # in the same bucket: one per caller, shared by every endpoint.
        fallback = [Limit(limit, key_function=bucket, scope="global", shared=True)]
    limiter = Limiter(
        bucket,
        app=app,
        application_limits=[limit],
        storage_uri=cache_url or "memory://",
        storage_options=options,
        in_memory_fallback=fallback,
        in_memory_fallback_enabled=bool(fallback),
        headers_enabled=True,
        retry_after="delta-seconds",
        key_prefix="sieve-rate",
        # The last line of defence, should the fallback itself fail: a limiter
        # error must not take the API down with it (the request passes).
        swallow_errors=True,
    )

    # A request filter, not an exemption of the application limit: the filter
    # also holds for the in-memory limits of an outage.
    @limiter.request_filter
    def _exempt() -> bool:
        return request.method == "OPTIONS" or request.endpoint in UNLIMITED

    if cache_url:
        app.after_request(_FallbackWatch(limiter, metrics))
    return limiter


def _retry_after_only_where_useful(response: Response) -> Response:
    """Retry-After on a 429 (the limiter's), and on a 503 only as ``api.errors`` set it.

    Flask-Limiter puts its window's reset on every response, 200s included, and
    raises a 503's own Retry-After to it: a client would wait for a reset that
    has nothing to do with what failed, or retry a 503 that no retry can cure.
    """
    if response.status_code == 429:
        return response
    own = own_retry_after() if response.status_code == 503 else None
    if own is None:
        response.headers.remove("Retry-After")
    else:
        response.headers["Retry-After"] = own
    return response


class _FallbackWatch:
    """Keeps the fallback metrics in step with the limiter (checked after each request).

    Flask-Limiter switches storage only while it handles a request, so looking
    after each one never misses a switch that matters.
    """

    def __init__(self, limiter: Limiter, metrics: Metrics) -> None:
        self.limiter, self.metrics = limiter, metrics
        self._falling_back = False
        self._lock = threading.Lock()

    def __call__(self, response: Response) -> Response:
        # Public properties only: the strategy in use counts in the main storage
        # unless Flask-Limiter has fallen back to its in-memory one.
        falling_back = self.limiter.limiter.storage is not self.limiter.storage
        if falling_back != self._falling_back:
            with self._lock:
                if falling_back != self._falling_back:
                    self._falling_back = falling_back
                    self.metrics.rate_limit_fallback.set(int(falling_back))
                    if falling_back:
                        self.metrics.rate_limit_outages.inc()
        return response
