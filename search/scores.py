"""Pair-score stores: cross-encoder scores keyed by (model, query, passage).

A ``ScoreStore`` keeps ``CachedScore`` values under ``pair_key``s: Redis when
``cache_url`` is set, else an in-process LRU (``make_store``). Stores fail open: a
Redis that is down or slow is a miss, counted and logged, never an error for the
caller. ``search.rerank.caching.CachingReranker`` puts a store in front of a reranker.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import struct
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol
from urllib.parse import urlsplit

from search.config import Settings
from search.errors import ConfigError

log = logging.getLogger(__name__)

KEY_PREFIX = "sieve:pair:"
_WARN_EVERY_S = 10.0
# Value: format version, logit (float64: round-trips exactly), start, end. 25 bytes.
_CODEC = struct.Struct("<Bdqq")
_CODEC_VERSION = 1
_COUNTERS = ("hits", "misses", "errors", "timeouts", "writes")


def normalise_query(query: str) -> str:
    """NFKC, casefolded, whitespace collapsed: queries that differ only so share scores."""
    return " ".join(unicodedata.normalize("NFKC", query).casefold().split())


def pair_keys(model_key: str, query: str, passages: Sequence[str]) -> list[str]:
    """``pair_key`` of each passage, the (model, query) part hashed once."""
    # surrogatepass: a lone surrogate from bad input must still give a stable key.
    base = hashlib.sha256()
    for part in (model_key, normalise_query(query)):
        data = part.encode("utf-8", "surrogatepass")
        base.update(len(data).to_bytes(8, "big") + data)  # length-prefixed: joins can't collide
    keys = []
    for passage in passages:
        digest = base.copy()  # the (model, query) prefix is hashed once per call
        digest.update(hashlib.sha256(passage.encode("utf-8", "surrogatepass")).digest())
        keys.append(KEY_PREFIX + digest.hexdigest())
    return keys


def pair_key(model_key: str, query: str, passage: str) -> str:
    """``sieve:pair:`` + sha256 of (model_key, normalised query, sha256 of the passage).

    ``model_key`` names model id, revision and max_length, so a model swap or an
    edited passage never serves an old score.
    """
    return pair_keys(model_key, query, [passage])[0]


@dataclass(frozen=True, slots=True)
class CachedScore:
    """What a store keeps of a ``RerankScore``; its score is ``search.rerank.sigmoid(logit)``."""

    logit: float
    start: int
    end: int


def encode_score(value: CachedScore) -> bytes:
    """25 bytes: format version, float64 logit, int64 start and end."""
    return _CODEC.pack(_CODEC_VERSION, value.logit, value.start, value.end)


def decode_score(raw: object) -> CachedScore | None:
    """The score in ``raw``, or None for anything that is not a valid encoded score."""
    if not isinstance(raw, bytes) or len(raw) != _CODEC.size:
        return None
    version, logit, start, end = _CODEC.unpack(raw)
    if version != _CODEC_VERSION or not math.isfinite(logit):
        return None
    return CachedScore(logit, start, end)


class ScoreStore(Protocol):
    """Where pair scores live. Implementations never raise for a backend failure."""

    def get_many(self, keys: Sequence[str]) -> list[CachedScore | None]:
        """One entry per key, None for a miss."""
        ...

    def set_many(self, items: Mapping[str, CachedScore], ttl_s: int) -> None:
        """Keep every item for ``ttl_s`` seconds (best effort)."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters since construction: hits, misses, errors, timeouts, writes."""
        ...


class _Counted:
    """Thread-safe counters behind ``stats()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_COUNTERS, 0)

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                self._counts[name] += delta

    def stats(self) -> dict[str, int]:
        """Counters since construction: hits, misses, errors (timeouts included), writes."""
        with self._lock:
            return dict(self._counts)


class LruScoreStore(_Counted):
    """In-process LRU with a TTL per entry: the cache when no Redis is configured."""

    def __init__(self, max_entries: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ConfigError("SIEVE_CACHE_LRU_SIZE must be >= 1", value=max_entries)
        super().__init__()
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, CachedScore]] = OrderedDict()

    def get_many(self, keys: Sequence[str]) -> list[CachedScore | None]:
        """One entry per key; an expired entry is dropped and is a miss."""
        now, found = self._clock(), list[CachedScore | None]()
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is not None and entry[0] <= now:
                    del self._entries[key]
                    entry = None
                elif entry is not None:
                    self._entries.move_to_end(key)
                found.append(None if entry is None else entry[1])
        hits = sum(value is not None for value in found)
        self._count(hits=hits, misses=len(found) - hits)
        return found

    def set_many(self, items: Mapping[str, CachedScore], ttl_s: int) -> None:
        """Insert or refresh, evicting the least recently used beyond ``max_entries``."""
        expires = self._clock() + ttl_s
        with self._lock:
            for key, value in items.items():
                self._entries[key] = (expires, value)
                self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        self._count(writes=len(items))


def _redis_module() -> ModuleType:
    # On first use: redis-py imports asyncio (~100 ms), which the embedded mode never needs.
    import redis

    return redis


def _redact(url: str) -> str:
    return re.sub(r"//([^/@]*):[^/@]*@", r"//\1:***@", url)


def _port_ok(url: str) -> bool:
    try:
        urlsplit(url).port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    return True


class RedisScoreStore(_Counted):
    """Pair scores in Redis: one MGET per lookup, one pipelined batch of ``SET .. EX``.

    Any failure (down, refused, slower than ``timeout_s``, any ``RedisError``) makes
    every key a miss or drops the write: counted in ``stats()``, logged at WARNING at
    most once per 10 s, never raised.
    """

    def __init__(self, url: str, timeout_s: float) -> None:
        if not url.startswith(("redis://", "rediss://", "unix://")) or not _port_ok(url):
            raise ConfigError(
                f"SIEVE_CACHE_URL={_redact(url)!r} is not a valid Redis URL: "
                "redis://[user:password@]host:port/db, rediss://... or unix:///path"
            )
        if not timeout_s > 0:
            raise ConfigError("SIEVE_CACHE_TIMEOUT_S must be > 0", value=timeout_s)
        super().__init__()
        self.url, self.timeout_s = url, timeout_s
        self._client: Any = None  # created on first use: a cheap constructor
        self._last_warning, self._suppressed = -math.inf, 0

    def _redis(self) -> Any:
        with self._lock:
            if self._client is None:
                from redis.backoff import NoBackoff
                from redis.retry import Retry

                self._client = _redis_module().Redis.from_url(
                    self.url,
                    socket_timeout=self.timeout_s,
                    socket_connect_timeout=self.timeout_s,
                    # No retries (what retry_on_timeout=False meant before redis-py 6
                    # deprecated it): a retry doubles the worst case, and redis-py 6's
                    # default client retries 3 times with backoff measured in seconds.
                    retry=Retry(NoBackoff(), 0),
                    # A connection idle 30 s is PINGed before use; a stale one is dropped
                    # (that call is a miss) and the next call reconnects.
                    health_check_interval=30,
                )
            return self._client

    def get_many(self, keys: Sequence[str]) -> list[CachedScore | None]:
        """One MGET; a garbage value, or every key of a failed call, is a miss."""
        if not keys:
            return []
        redis = _redis_module()
        try:
            found = [decode_score(raw) for raw in self._redis().mget(list(keys))]
        except (redis.RedisError, OSError) as exc:
            self._failed("MGET", exc)
            return [None] * len(keys)
        hits = sum(value is not None for value in found)
        self._count(hits=hits, misses=len(found) - hits)
        return found

    def set_many(self, items: Mapping[str, CachedScore], ttl_s: int) -> None:
        """One pipelined (non-transactional) batch of ``SET key value EX ttl_s``."""
        if not items:
            return
        redis = _redis_module()
        try:
            pipe = self._redis().pipeline(transaction=False)
            for key, value in items.items():
                pipe.set(key, encode_score(value), ex=ttl_s)
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self._failed("SET", exc)
            return
        self._count(writes=len(items))

    def close(self) -> None:
        """Drop the connections; the next call reconnects."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _failed(self, operation: str, exc: BaseException) -> None:
        timed_out = isinstance(exc, _redis_module().TimeoutError | TimeoutError)
        now = time.monotonic()
        with self._lock:
            self._counts["errors"] += 1
            self._counts["timeouts"] += timed_out
            # Rate-limited: during an outage every query fails here.
            if now - self._last_warning < _WARN_EVERY_S:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._last_warning = self._suppressed, 0, now
        log.warning(
            "pair-score cache: %s on %s failed (%s: %s); serving without the cache "
            "(%d more failures since the last warning)",
            operation, _redact(self.url), type(exc).__name__, exc, suppressed,
        )


def make_store(settings: Settings) -> ScoreStore:
    """Redis when ``settings.cache_url`` is set, else an in-process LRU."""
    if settings.cache_url:
        return RedisScoreStore(settings.cache_url, settings.cache_timeout_s)
    return LruScoreStore(settings.cache_lru_size)
