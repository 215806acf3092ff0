"""The Celery application: one factory, and a lazy ``app`` for the ``celery`` command line.

``celery_init_app(settings, workers)`` is the one place a Celery app is built: it
configures the app from the engine's and the workers' settings and registers
Sieve's tasks on it. Every sender (the rerank client, the API's job queue, the
index client) is handed such an app; none builds its own. On the app,
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
created from ``SIEVE_*`` variables on first access (this module is the Celery
command line's edge), which is how ``celery -A workers.app`` finds it.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery

from search.config import Settings
from workers.names import (
    DELETE_TASK,
    INDEX_TASK,
    RECONCILE_SCHEDULE,
    RECONCILE_TASK,
    RERANK_TASK,
)
from workers.results import backend_url
from workers.settings import CONNECT_TIMEOUT_S, SOCKET_TIMEOUT_S, WorkerSettings, check_broker_url

# A pool process reports "up" only after worker_process_init, i.e. after the model
# loaded; Celery kills one that takes longer than 4 s (its default), which a real
# model on a cold disk always does, and then the next one, in a loop.
MODEL_LOAD_TIMEOUT_S = 600.0
# Results are read within the client's deadline (seconds); nobody reads them later.
RESULT_EXPIRES_S = 300


def celery_init_app(settings: Settings, workers: WorkerSettings) -> Celery:
    """A Celery app: JSON only, acks late with a delivery limit, timeouts, Sieve's tasks.

    Nothing connects yet. Raises ``ConfigError`` when there is no broker URL, or
    it is not Redis (the delivery limit keeps its counters in the broker's Redis).
    """
    check_broker_url(workers.broker_url)
    app = Celery("sieve", set_as_current=False)
    app.conf.update(_config(workers))
    # Imported here: the task modules pull in the engine's indexing code, and
    # importing this module stays as cheap as it was (a client needs no tasks' code).
    from workers.indexing import register_index_tasks
    from workers.tasks import register_rerank_task

    register_rerank_task(app, settings, workers)
    register_index_tasks(app, settings, workers)
    return app


def _config(settings: WorkerSettings) -> dict[str, Any]:
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
        # WorkerSettings guarantees soft < hard < visibility timeout, so a running task
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
        "task_routes": {
            RERANK_TASK: {"queue": settings.rerank_queue},
            INDEX_TASK: {"queue": settings.index_queue},
            DELETE_TASK: {"queue": settings.index_queue},
            RECONCILE_TASK: {"queue": settings.index_queue},
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


def _beat_schedule(settings: WorkerSettings) -> dict[str, Any]:
    """The periodic reconcile of every collection (none when the interval is 0)."""
    interval = settings.reconcile_interval_s
    if interval <= 0:
        return {}
    return {
        RECONCILE_SCHEDULE: {
            "task": RECONCILE_TASK,
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
            _lazy_app = celery_init_app(Settings.from_env(), WorkerSettings.from_env())
        return _lazy_app
