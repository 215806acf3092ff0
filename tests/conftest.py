"""Shared fixtures. Each lives in ``tests/support/`` by what it needs."""

import os

# Tests never download: every model they load is built locally by a fixture.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
from support.browser import browser, console_errors  # noqa: F401
from support.celery_worker import celery_worker  # noqa: F401
from support.live_server import live_server  # noqa: F401
from support.postgres import pg_url  # noqa: F401
from support.redis_server import redis_server  # noqa: F401
from support.tiny_models import tiny_encoder_dir, tiny_reranker_dir  # noqa: F401

# The behaviour mixins of the chunk-store contract assert outside test modules;
# registered before any test module imports them.
pytest.register_assert_rewrite("support.chunk_store_contract")
