"""``WorkerSettings``: the Celery layer's knobs (broker, queues, time limits, retries).

Read from ``SIEVE_*`` variables like every layer's settings (``search.config.EnvSettings``);
the engine's settings stay in ``search.config.Settings``. Also here: the fixed
timeouts of every Redis connection the Celery layer opens, and the broker URL check.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from search.config import EnvSettings
from search.errors import ConfigError

# Connecting is quick or it is not happening: a broker on the LAN answers a
# connect in milliseconds, and a client must not spend its rerank deadline on one.
CONNECT_TIMEOUT_S = 1.0
# Reads on an established connection. Above kombu's 1 s BRPOP poll (a worker's
# idle read), and a bound on how long a hung Redis can stall a call.
SOCKET_TIMEOUT_S = 5.0
# The most an index or delete job's enqueue waits for a broker that does not answer
# (one that refuses fails at once); the documents stay staged, pending, meanwhile.
ENQUEUE_TIMEOUT_S = 2.0
REDIS_SCHEMES = ("redis", "rediss")


@dataclass(frozen=True)
class WorkerSettings(EnvSettings):
    """Celery (distributed mode). Field ``foo_bar`` is read from ``SIEVE_FOO_BAR``."""

    # The broker must not evict (a separate Redis).
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
    index_max_retries: int = 10
    reconcile_interval_s: int = 600

    def __post_init__(self) -> None:
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


def check_broker_url(url: str) -> None:
    """Raise ``ConfigError`` unless ``url`` is a Redis URL."""
    if not url:
        raise ConfigError("the Celery workers need SIEVE_BROKER_URL (a Redis URL)")
    scheme = urlsplit(url).scheme
    if scheme not in REDIS_SCHEMES:
        raise ConfigError(
            f"SIEVE_BROKER_URL scheme {scheme!r} is not supported; use one of "
            f"{', '.join(REDIS_SCHEMES)} (the delivery limit keeps its counters in Redis)",
            value=url,
        )
