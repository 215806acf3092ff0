"""The HTTP API's settings, and ``ServiceSettings``: every layer's, read once at an edge.

``ApiSettings`` holds what only the API and ``sieve serve`` use (keys, limits, CORS,
the bind address). ``ServiceSettings`` bundles it with the engine's
(``search.config.Settings``) and the Celery layer's (``workers.settings.WorkerSettings``):
the API layer is the one that knows all three, so the checks that span layers
(a Celery backend needs a broker) and the list of known ``SIEVE_*`` names live here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from search.config import COLLECTION_PATTERN, EnvSettings, Settings, one_of, unknown_variables
from search.errors import ConfigError
from workers.settings import WorkerSettings

API_ROLES = ("search", "admin")
INDEX_BACKENDS = ("thread", "celery")
# Flask-Limiter notation: "600/minute", "10 per second", several joined by ";".
_RATE_ITEM = re.compile(r"\s*\d+\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day|month|year)s?\s*")


@dataclass(frozen=True)
class ApiSettings(EnvSettings):
    """The HTTP API (docs/api.md). Field ``foo_bar`` is read from ``SIEVE_FOO_BAR``."""

    # Keys: "key:role[:collection|collection],..."; none configured means an open
    # API that `sieve serve` binds to 127.0.0.1 only.
    api_keys: str = field(default="", repr=False)  # secrets stay out of logged reprs
    max_body_bytes: int = 32 * 1024 * 1024
    # One document's text (a JSON document, an uploaded file, a JSONL line): a
    # bound on what one indexing step holds, so one huge file cannot hold the
    # indexer (and its memory) for minutes while other collections wait.
    max_document_bytes: int = 2 * 1024 * 1024
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
    # `sieve serve` loads the models and the Chinese dictionary in each worker
    # before /readyz says ready; off: the first query that needs one loads it
    # (and says so in its timings_ms as "load").
    warm_up: bool = True
    # Where the API's indexing jobs run: "thread" (in the API process, the
    # embedded default) or "celery" (index workers; the registry is the outbox).
    index_backend: str = "thread"

    def __post_init__(self) -> None:
        one_of("index_backend", self.index_backend, INDEX_BACKENDS)
        parse_api_keys(self.api_keys)
        for name in (
            "max_body_bytes",
            "max_document_bytes",
            "max_batch_docs",
            "max_rerank_docs",
            "workers",
            "threads",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"SIEVE_{name.upper()} must be >= 1", value=getattr(self, name))
        if not 0 <= self.port <= 65535:
            raise ConfigError("SIEVE_PORT must be from 0 to 65535", value=self.port)
        check_rate_limit(self.rate_limit)
        for origin in self.cors_origins:
            check_origin(origin)


def check_rate_limit(rate_limit: str) -> None:
    """``SIEVE_RATE_LIMIT`` in Flask-Limiter's notation, or empty (no rate limiting)."""
    if rate_limit and not all(_RATE_ITEM.fullmatch(item) for item in rate_limit.split(";")):
        raise ConfigError(
            f"SIEVE_RATE_LIMIT={rate_limit!r} is not valid: use e.g. '600/minute' "
            "or '10/second;600/hour' (empty turns rate limiting off)",
            value=rate_limit,
        )


def check_origin(origin: str) -> None:
    """One ``SIEVE_CORS_ORIGINS`` entry: ``scheme://host[:port]`` or ``*``."""
    if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
        raise ConfigError(
            f"SIEVE_CORS_ORIGINS entry {origin!r} is not an origin: use "
            "scheme://host[:port] without a path, e.g. https://app.example.com, or *",
            value=origin,
        )


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


# Every layer's settings, by their ServiceSettings field; each SIEVE_* name is a
# field of exactly one of them.
_BUNDLED: dict[str, type[EnvSettings]] = {
    "engine": Settings,
    "api": ApiSettings,
    "workers": WorkerSettings,
}
LAYERS: tuple[type[EnvSettings], ...] = tuple(_BUNDLED.values())


@dataclass(frozen=True)
class ServiceSettings:
    """The settings of every layer a Sieve process runs, read once at its edge."""

    engine: Settings = field(default_factory=Settings)
    api: ApiSettings = field(default_factory=ApiSettings)
    workers: WorkerSettings = field(default_factory=WorkerSettings)
    # SIEVE_* variables that no layer reads (a typo, or a setting of a newer version).
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        broker = self.workers.broker_url
        if self.api.index_backend == "celery" and not broker:
            raise ConfigError("SIEVE_INDEX_BACKEND=celery needs SIEVE_BROKER_URL")
        if self.engine.rerank_backend == "celery" and not broker:
            raise ConfigError("SIEVE_RERANK_BACKEND=celery needs SIEVE_BROKER_URL")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        """Every layer's ``SIEVE_*`` variables; names no layer reads go to ``extra``."""
        env = os.environ if environ is None else environ
        return cls(
            engine=Settings.from_env(env),
            api=ApiSettings.from_env(env),
            workers=WorkerSettings.from_env(env),
            extra=unknown_variables(env, LAYERS),
        )

    def with_overrides(self, **changes: Any) -> ServiceSettings:
        """A copy with some fields changed, each in the one layer that has it."""
        per_layer: dict[str, dict[str, Any]] = {}
        for name, value in changes.items():
            layer = _layer_of(name)
            per_layer.setdefault(layer, {})[name] = value
        updated = {
            layer: getattr(self, layer).with_overrides(**values)
            for layer, values in per_layer.items()
        }
        return replace(self, **updated)


def _layer_of(name: str) -> str:
    for layer, cls in _BUNDLED.items():
        if name in {f.name for f in fields(cls)}:  # type: ignore[arg-type]  # dataclasses
            return layer
    raise TypeError(f"no layer has a setting named {name!r}")
