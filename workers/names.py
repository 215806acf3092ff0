"""The names of Sieve's Celery tasks: what a sender and a worker must agree on.

A module of constants, importing nothing, so that a client (the API, the
rerank client) names a task without importing the worker's task code.
"""

from __future__ import annotations

RERANK_TASK = "sieve.rerank"
INDEX_TASK = "sieve.index_documents"
DELETE_TASK = "sieve.delete_documents"
RECONCILE_TASK = "sieve.reconcile"
INDEX_TASKS = (INDEX_TASK, DELETE_TASK, RECONCILE_TASK)
# celery beat's entry that sends RECONCILE_TASK every reconcile_interval_s.
RECONCILE_SCHEDULE = "sieve-reconcile"
