"""Settings for the optional server halves of the contract suites (Elasticsearch)."""

from __future__ import annotations

import os

from search.config import Settings

ES_URL = os.environ.get("SIEVE_TEST_ES_URL", "")


def es_test_settings(prefix: str) -> Settings:
    """Settings for the Elasticsearch under test, with an index prefix of the test's own."""
    return Settings(
        keyword_backend="elasticsearch",
        es_url=ES_URL,
        es_api_key=os.environ.get("SIEVE_TEST_ES_API_KEY", ""),
        es_username=os.environ.get("SIEVE_TEST_ES_USERNAME", ""),
        es_password=os.environ.get("SIEVE_TEST_ES_PASSWORD", ""),
        es_index_prefix=prefix,
        es_max_retries=2,
    )
