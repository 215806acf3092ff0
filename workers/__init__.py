"""Celery side of Sieve: the app factory, tasks, delivery limit and the Celery reranker.

Kept empty on purpose: ``import workers`` imports no Celery and no model. Import
the submodule you need (``workers.app``, ``workers.client``, ...).
"""
