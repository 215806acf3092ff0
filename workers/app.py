"""The Celery application: one factory, and a lazy ``app`` for the ``celery`` command line.

``make_celery(settings)`` builds a configured app and registers Sieve's tasks on it;
nothing connects to the broker and no model loads until a worker starts (models
load in each pool process after the fork, see ``workers.tasks``). Run one worker
process per GPU, each pinned to its device::

    CUDA_VISIBLE_DEVICES=0 celery -A workers.app worker --queues rerank --concurrency 1
    CUDA_VISIBLE_DEVICES=1 celery -A workers.app worker --queues rerank --concurrency 1

(``sieve worker --queues rerank --concurrency 1`` where the command line wraps it.)
Indexing jobs go to the ``index`` queue (``workers.indexing``), and one
``celery -A workers.app beat`` process sends the periodic reconcile there. With
the embedded engines (tantivy, Qdrant Edge) one index worker process owns a data
directory: ``celery -A workers.app worker --queues index --concurrency 1``.
On CPU, concurrency 1 or 2, with ``OMP_NUM_THREADS`` = cores / concurrency: a
forward pass already uses every core it can get, and torch's idle threads spin
on the cores the broker, the worker's main process and the clients need.

``import workers.app`` reads no environment; the module attribute ``app`` is
created from ``SIEVE_*`` variables on first access, which is how
``celery -A workers.app`` finds it.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

from celery import Celery

from search.config import Settings
from search.errors import ConfigError
from workers.results import backend_url

# Connecting is quick or it is not happening: a broker on the LAN answers a
# connect in milliseconds, and a client must not spend its rerank deadline on one.
CONNECT_TIMEOUT_S = 1.0
# Reads on an established connection. Above kombu's 1 s BRPOP poll (a worker's
# idle read), and a bound on how long a hung Redis can stall a call.
SOCKET_TIMEOUT_S = 5.0
# A pool process reports "up" only after worker_process_init, i.e. after the model
# loaded; Celery kills one that takes longer than 4 s (its default), which a real
# model on a cold disk always does, and then the next one, in a loop.
MODEL_LOAD_TIMEOUT_S = 600.0
# Results are read within the client's deadline (seconds); nobody reads them later.
RESULT_EXPIRES_S = 300
REDIS_SCHEMES = ("redis", "rediss")


def make_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings``: JSON only, acks late with a delivery limit, timeouts.

    Raises ``ConfigError`` when there is no broker URL, or it is not Redis (the
    delivery limit keeps its counters in the broker's Redis).
    """
    check_broker_url(settings.broker_url)
    app = Celery("sieve", set_as_current=False)
    app.conf.update(_config(settings))
    # Imported here, not at module level: workers.tasks needs the app's settings,
    # and importing it must stay as cheap as importing this module (no torch).
    from workers.tasks import register_tasks

    register_tasks(app, settings)
    return app


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


def _config(settings: Settings) -> dict[str, Any]:
    redis_timeouts = {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
    }
    return {
        "broker_url": settings.broker_url,
        # "" is not a URL but "unset": results then go to the broker's Redis.
        # workers.results: a backend whose get(timeout=...) ends on time.
        "result_backend": backend_url(settings.result_backend or settings.broker_url),
        # JSON only: a pickled payload from the broker would be code execution.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Ack after the task ran, so a worker that dies mid-task loses nothing: the
        # message goes back to the queue. workers.delivery bounds how often.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A task that raised is acked (not redelivered): retrying is the task's
        # decision, and workers.delivery relies on it to drop a dead-lettered one.
        "task_acks_on_failure_or_timeout": True,
        # A lost connection cancels running acks-late tasks (they are redelivered
        # anyway); Celery 5.1+ warns without this, and 6.0 makes it the default.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Each process reserves one message: a GPU worker busy with a long batch
        # does not sit on requests another worker could serve now.
        "worker_prefetch_multiplier": 1,
        # Settings guarantees soft < hard < visibility timeout, so a running task
        # is never handed to a second worker while the first is still on it.
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout_s,
            **redis_timeouts,
        },
        "broker_connection_timeout": CONNECT_TIMEOUT_S,
        "broker_connection_retry_on_startup": True,
        # A client publishing to a dead broker learns it in well under a second.
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0.0,
            "interval_step": 0.1,
            "interval_max": 0.1,
        },
        "redis_socket_timeout": SOCKET_TIMEOUT_S,
        "redis_socket_connect_timeout": CONNECT_TIMEOUT_S,
        "result_expires": RESULT_EXPIRES_S,
        # Names of workers.tasks.RERANK_TASK and workers.indexing.INDEX_TASKS.
        "task_routes": {
            "sieve.rerank": {"queue": settings.rerank_queue},
            "sieve.index_documents": {"queue": settings.index_queue},
            "sieve.delete_documents": {"queue": settings.index_queue},
            "sieve.reconcile": {"queue": settings.index_queue},
        },
        # `celery -A workers.app beat` sends these; run exactly one beat process.
        "beat_schedule": _beat_schedule(settings),
        # STARTED is stored when a worker picks a task up: the gap between sending
        # and starting (queue wait) is then visible apart from the run time. The
        # rerank task opts out; its reply carries the start time (workers.tasks).
        "task_track_started": True,
        "worker_proc_alive_timeout": MODEL_LOAD_TIMEOUT_S,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        # Read by workers.delivery.DeliveryLimitedTask (custom keys ride on conf).
        "sieve_task_max_deliveries": settings.task_max_deliveries,
        # A counter must outlive every redelivery of its task: each one can take
        # up to a visibility timeout (a lost message is restored only after it).
        "sieve_delivery_ttl_s": settings.broker_visibility_timeout_s
        * (settings.task_max_deliveries + 1),
    }


def _beat_schedule(settings: Settings) -> dict[str, Any]:
    """The periodic reconcile of every collection (none when the interval is 0)."""
    interval = settings.reconcile_interval_s
    if interval <= 0:
        return {}
    return {
        "sieve-reconcile": {
            "task": "sieve.reconcile",  # workers.indexing.RECONCILE_TASK
            "schedule": float(interval),
            # Runs that pile up while no index worker is up are dropped, not replayed.
            "options": {"queue": settings.index_queue, "expires": float(interval)},
        }
    }


_lazy_app: Celery | None = None
_lazy_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    """``workers.app.app``: the app of the environment's settings, made on first access.

    A module ``__getattr__`` (PEP 562) keeps ``import workers.app`` free of
    environment reads while ``celery -A workers.app`` still finds ``app``.
    """
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    global _lazy_app
    with _lazy_lock:
        if _lazy_app is None:
            _lazy_app = make_celery(Settings.from_env())
        return _lazy_app
