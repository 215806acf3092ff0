"""A test-only Celery app: Sieve's app plus a task that kills its own worker process.

Started with ``celery -A support.crash_app worker`` (``tests/`` on PYTHONPATH) to
show that the delivery limit dead-letters a poison task instead of letting
``acks_late`` + ``reject_on_worker_lost`` redeliver it forever.
"""

from __future__ import annotations

import os
import signal

from search.config import Settings
from workers.app import celery_init_app
from workers.delivery import DeliveryLimitedTask
from workers.settings import WorkerSettings

CRASH_TASK = "sieve.test.crash"

app = celery_init_app(Settings.from_env(), WorkerSettings.from_env())


@app.task(name=CRASH_TASK, base=DeliveryLimitedTask, shared=False)
def crash() -> None:
    """Die as an OOM kill would: SIGKILL, no cleanup, no result."""
    os.kill(os.getpid(), signal.SIGKILL)
