"""The pair-score cache against a real ``redis-server``: round trip, one MGET, outages.

Keys are isolated per test by a unique ``model_key``; no test flushes the shared
server. Tests that stop or pause the server restore it before they end.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
import uuid
from collections.abc import Iterator, Sequence

import pytest
import redis
from support.redis_server import RedisServer

from search.rerank import CachingReranker, sigmoid
from search.scores import RedisScoreStore, decode_score, pair_key
from search.types import RerankBatch, RerankScore

pytestmark = pytest.mark.integration

PASSAGES = [f"Passage {i}: keep the {w} dry and cool." for i, w in enumerate("abcdefgh")]


def fake_logit(query: str, passage: str) -> float:
    digest = hashlib.sha256(f"{query}\x00{passage}".encode()).digest()
    return (int.from_bytes(digest[:4], "big") / 2**32 - 0.5) * 17.3


class CountingReranker:
    """A fake model (test double, not a fault): deterministic logits, records calls."""

    def __init__(self) -> None:
        self.model_key = f"fake/reranker@{uuid.uuid4().hex}:512"  # unique keys per test
        self.calls: list[list[str]] = []

    def rerank(
        self, query: str, passages: Sequence[str], *, deadline: float | None = None
    ) -> RerankBatch:
        self.calls.append(list(passages))
        logits = [(fake_logit(query, p), len(p)) for p in passages]
        return RerankBatch([RerankScore(x, sigmoid(x), 0, n) for x, n in logits])


def model_scores(query: str, passages: Sequence[str]) -> list[RerankScore]:
    return CountingReranker().rerank(query, passages).scores


@pytest.fixture
def admin(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    yield client
    client.close()


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[RedisScoreStore]:
    store = RedisScoreStore(redis_server.url, timeout_s=0.5)
    yield store
    store.close()


def calls(admin: redis.Redis, command: str) -> int:
    stats: dict[str, dict[str, int]] = admin.info("commandstats")  # type: ignore[assignment]
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def test_round_trip_sets_ttl_and_compact_values(admin, store):
    inner = CountingReranker()
    cached = CachingReranker(inner, store, ttl_s=3600)
    first = cached.rerank("keep it dry", PASSAGES)
    assert first.cached == 0 and first.scores == model_scores("keep it dry", PASSAGES)
    for passage in PASSAGES:
        key = pair_key(inner.model_key, "keep it dry", passage)
        assert 0 < admin.ttl(key) <= 3600
        raw = admin.get(key)
        assert raw is not None and len(raw) == 25 and decode_score(raw) is not None

    again = cached.rerank("Keep  it DRY", PASSAGES)
    assert again.cached == len(PASSAGES) and len(inner.calls) == 1
    assert again.scores == first.scores
    assert store.stats() == {
        "hits": len(PASSAGES), "misses": len(PASSAGES), "errors": 0, "timeouts": 0,
        "writes": len(PASSAGES),
    }


def test_one_mget_per_call_and_one_set_per_new_pair(admin, store):
    cached = CachingReranker(CountingReranker(), store, ttl_s=60)
    mget, set_, get = calls(admin, "mget"), calls(admin, "set"), calls(admin, "get")
    cached.rerank("q", PASSAGES + PASSAGES[:3])  # duplicates: looked up and written once
    assert calls(admin, "mget") - mget == 1
    assert calls(admin, "set") - set_ == len(PASSAGES)
    for _ in range(3):
        cached.rerank("q", PASSAGES)
    assert calls(admin, "mget") - mget == 4
    assert calls(admin, "set") - set_ == len(PASSAGES)  # warm calls write nothing
    assert calls(admin, "get") == get


def test_garbage_value_is_a_miss_and_is_repaired(admin, store):
    inner = CountingReranker()
    cached = CachingReranker(inner, store, ttl_s=60)
    cached.rerank("q", PASSAGES)
    key = pair_key(inner.model_key, "q", PASSAGES[2])
    admin.set(key, b"not a score")
    batch = cached.rerank("q", PASSAGES)
    assert batch.cached == len(PASSAGES) - 1 and inner.calls[1] == [PASSAGES[2]]
    assert batch.scores == model_scores("q", PASSAGES)
    assert decode_score(admin.get(key)) is not None


def test_redis_stopped_mid_run_serves_model_scores(redis_server, store, caplog):
    inner = CountingReranker()
    cached = CachingReranker(inner, store, ttl_s=60)
    cached.rerank("q", PASSAGES[:4])
    try:
        redis_server.stop()
        with caplog.at_level(logging.WARNING, logger="search.scores"):
            for _ in range(3):
                batch = cached.rerank("q", PASSAGES)
                assert batch.scores == model_scores("q", PASSAGES) and batch.cached == 0
        stats = store.stats()
        assert stats["errors"] == 6  # each call: the MGET and the write
        warnings = [r for r in caplog.records if r.name == "search.scores"]
        assert len(warnings) == 1  # rate-limited: one per 10 s, not one per failure
        assert "serving without the cache" in warnings[0].getMessage()
    finally:
        redis_server.start()
    # Redis is back (empty: no persistence): the next call fills it, the one after hits.
    assert cached.rerank("q", PASSAGES).cached == 0
    assert cached.rerank("q", PASSAGES).cached == len(PASSAGES)
    assert store.stats()["errors"] == 6


def test_slow_redis_is_a_miss_within_the_timeout(redis_server, admin):
    store = RedisScoreStore(redis_server.url, timeout_s=0.05)
    inner = CountingReranker()
    cached = CachingReranker(inner, store, ttl_s=60)
    cached.rerank("q", PASSAGES)
    admin.execute_command("CLIENT", "PAUSE", 500)  # every client's commands wait 0.5 s
    try:
        started = time.monotonic()
        batch = cached.rerank("q", PASSAGES)
        elapsed = time.monotonic() - started
    finally:
        admin.ping()  # blocks until the pause is over
    assert batch.scores == model_scores("q", PASSAGES) and batch.cached == 0
    assert elapsed < 0.3  # two timeouts of 0.05 s (lookup, write), not the 0.5 s pause
    assert store.stats()["timeouts"] == store.stats()["errors"] == 2
    assert cached.rerank("q", PASSAGES).cached == len(PASSAGES)  # the pooled client recovers
    store.close()


def test_unreachable_redis_is_only_misses():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = closed.getsockname()[1]
        store = RedisScoreStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.05)
        cached = CachingReranker(CountingReranker(), store, ttl_s=60)
        started = time.monotonic()
        batch = cached.rerank("q", PASSAGES)
        assert time.monotonic() - started < 0.3
    assert batch.scores == model_scores("q", PASSAGES) and batch.cached == 0
    assert store.stats()["errors"] == 2 and store.get_many([]) == []
