"""Prometheus metrics, one registry per app (tests build many apps in one process).

Request counts and latencies are recorded around every request; stage
timings and degradations come from each ``SearchResult``; cache hits and
misses and the indexing queue depth are read live at scrape time from the
objects that own them, so they can never drift from the source.

With several gunicorn worker processes each has its own registry; the
embedded mode runs one process, so its numbers are whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from search.types import SearchResult

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STAGES = ("bm25", "vector", "rerank")  # what can degrade


class _Live(Collector):
    """Values owned elsewhere, read when Prometheus scrapes."""

    def __init__(
        self, cache_stats: Callable[[], dict[str, int]], queue_depth: Callable[[], int]
    ) -> None:
        self.cache_stats = cache_stats
        self.queue_depth = queue_depth

    def collect(self) -> Iterator[Metric]:
        stats = self.cache_stats()
        yield CounterMetricFamily(
            "sieve_cache_hits", "Pair-score cache hits", value=stats.get("hits", 0)
        )
        yield CounterMetricFamily(
            "sieve_cache_misses", "Pair-score cache misses", value=stats.get("misses", 0)
        )
        depth = GaugeMetricFamily("sieve_queue_depth", "Jobs waiting to start", labels=["queue"])
        depth.add_metric(["index"], self.queue_depth())
        yield depth


class Metrics:
    """The app's metrics and the registry they are exposed from."""

    def __init__(
        self, cache_stats: Callable[[], dict[str, int]], queue_depth: Callable[[], int]
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sieve_requests",
            "HTTP requests by endpoint, method and status",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sieve_request_seconds",
            "HTTP request latency by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stages = Histogram(
            "sieve_stage_seconds",
            "Time per query stage (from timings_ms)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.degraded = Counter(
            "sieve_degraded",
            "Queries answered without a stage that failed or ran late",
            ["stage"],
            registry=self.registry,
        )
        for stage in STAGES:
            self.degraded.labels(stage)  # present at 0 from the start
        # Set by api.ratelimit when the rate limits' Redis goes down or comes back.
        self.rate_limit_fallback = Gauge(
            "sieve_rate_limit_fallback",
            "1 while rate limits are counted in this process because their Redis is down",
            registry=self.registry,
        )
        self.rate_limit_outages = Counter(
            "sieve_rate_limit_outages",
            "Times the rate limits' Redis was found down (limits then counted in process)",
            registry=self.registry,
        )
        self.registry.register(_Live(cache_stats, queue_depth))

    def observe_result(self, result: SearchResult) -> None:
        """Stage timings and degradations of one query."""
        for stage, ms in result.timings_ms.items():
            self.stages.labels(stage).observe(ms / 1000.0)
        for stage in result.degraded:
            self.degraded.labels(stage).inc()

    def render(self) -> Response:
        """The Prometheus text exposition."""
        return Response(generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST)

    def install(self, app: Flask) -> None:
        """Time and count every request (register before any hook that may fail)."""

        @app.before_request
        def _start() -> None:
            g.sieve_started = time.perf_counter()

        @app.after_request
        def _record(response: Response) -> Response:
            # The route template, not the URL: bounded label values.
            endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
            elapsed = time.perf_counter() - g.get("sieve_started", time.perf_counter())
            self.requests.labels(endpoint, request.method, str(response.status_code)).inc()
            self.latency.labels(endpoint).observe(elapsed)
            return response
