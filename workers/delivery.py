"""A delivery limit for acks-late tasks on a Redis broker.

Why: Sieve's tasks ack late and reject on a lost worker, so a worker that dies
mid-task (OOM-killed, segfault in a CUDA kernel, node lost) loses nothing: the
message goes back to the queue and another process runs it. A task that *causes*
the death, though, would then kill every worker that takes it, forever. RabbitMQ
quorum queues bound this with ``x-delivery-limit``; Redis has nothing of the kind,
so this base class counts deliveries itself.

Semantics, precisely: each delivery that reaches a pool process increments
``sieve:deliveries:<task id>`` (INCR, in the broker's Redis) *before* the task
body runs, so a delivery that kills its process is still counted. The body runs
on deliveries 1..``task_max_deliveries``. Delivery ``task_max_deliveries + 1``
runs nothing: it appends a JSON record to the list ``sieve:dead-letter`` and
fails the task with ``DeadLettered``. A failure is stored as the task's result
(so a waiting client gets an error at once rather than at its deadline) and,
the task having finished, its message is acked and never delivered again. The
counter then reads ``task_max_deliveries + 1``.

A retry (``Task.retry``) keeps the task id, so it counts as a delivery too.
"""

from __future__ import annotations

import json
import logging
import os
import reprlib
import time
from typing import Any

import redis
from celery import Task

from search.errors import ConfigError, SieveError
from workers.settings import CONNECT_TIMEOUT_S, SOCKET_TIMEOUT_S

log = logging.getLogger(__name__)

DELIVERIES_KEY = "sieve:deliveries:"
DEAD_LETTER_KEY = "sieve:dead-letter"
# The broker's Redis must not evict, so nothing there may grow without bound.
DEAD_LETTER_MAX = 10_000

# Arguments can be megabytes of passages: the record keeps a readable summary.
_summary = reprlib.Repr()
_summary.maxstring = 80
_summary.maxlist = 4
_summary.maxother = 80


class DeadLettered(SieveError):
    """A task was delivered more than ``task_max_deliveries`` times; it was not run again."""

    code = "dead_lettered"


class DeliveryLimitedTask(Task):
    """Base class of Sieve's tasks: acks late, and runs a message at most N times.

    Needs an app from ``workers.app.celery_init_app`` (it reads the limit and the
    counter lifetime from the app's configuration).
    """

    acks_late = True
    reject_on_worker_lost = True
    # Expected failures: logged without a traceback (the dead-letter line says it all).
    throws: tuple[type[BaseException], ...] = (DeadLettered,)

    _client: redis.Redis | None = None
    _client_pid = 0

    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Count this delivery; dead-letter the task instead of running it past the limit."""
        limit = self.app.conf.get("sieve_task_max_deliveries")
        ttl_s = self.app.conf.get("sieve_delivery_ttl_s")
        if limit is None or ttl_s is None:
            raise ConfigError(
                f"{type(self).__name__} needs an app made by workers.app.celery_init_app"
            )
        try:
            deliveries = self._count(task_id, int(ttl_s))
        except redis.RedisError as exc:
            # The limit guards against poison messages; a Redis blip must not fail
            # healthy tasks. (If the broker is really gone, nothing runs anyway.)
            log.warning("delivery counter unavailable, running %s[%s]: %s", self.name, task_id, exc)
            return
        if deliveries <= int(limit):
            return
        record = {
            "task_id": task_id,
            "name": self.name,
            "args": _summary.repr(args),
            "kwargs": _summary.repr(kwargs),
            "deliveries": deliveries,
            "queue": (self.request.delivery_info or {}).get("routing_key"),
            "hostname": self.request.hostname,
            "time": time.time(),
        }
        try:
            pipe = self._redis().pipeline(transaction=False)
            pipe.rpush(DEAD_LETTER_KEY, json.dumps(record))
            pipe.ltrim(DEAD_LETTER_KEY, -DEAD_LETTER_MAX, -1)
            pipe.execute()
        except redis.RedisError as exc:
            log.error("could not dead-letter %s[%s]: %s", self.name, task_id, exc)
        log.error(
            "dead-lettered %s[%s]: delivery %d, limit %s, args %s",
            self.name, task_id, deliveries, limit, record["args"],
        )
        raise DeadLettered(
            f"task {self.name}[{task_id}] was delivered {deliveries} times "
            f"(limit {limit}, each earlier delivery lost its worker); not run again, "
            f"recorded in {DEAD_LETTER_KEY}",
            task_id=task_id,
            deliveries=deliveries,
        )

    def _count(self, task_id: str, ttl_s: int) -> int:
        # One round trip; the expiry keeps the non-evicting broker Redis bounded.
        pipe = self._redis().pipeline(transaction=False)
        pipe.incr(DELIVERIES_KEY + task_id)
        pipe.expire(DELIVERIES_KEY + task_id, ttl_s)
        count, _ = pipe.execute()
        return int(count)

    def _redis(self) -> redis.Redis:
        # One client per process, made after the fork: a socket inherited from the
        # parent would be shared by every pool process.
        if self._client is None or self._client_pid != os.getpid():
            self._client = redis.Redis.from_url(
                self.app.conf.broker_url,
                socket_timeout=SOCKET_TIMEOUT_S,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
            )
            self._client_pid = os.getpid()
        return self._client


def deliveries(client: redis.Redis, task_id: str) -> int:
    """How many times ``task_id`` has been delivered to a pool process (0: never)."""
    value: Any = client.get(DELIVERIES_KEY + task_id)
    return int(value) if value is not None else 0
