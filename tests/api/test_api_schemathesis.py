"""Property-based tests from /openapi.json: generated requests never make a 5xx.

Schemathesis loads the document through the app itself (in-process WSGI), so
this also checks that the document is valid OpenAPI, and every answer is
checked against the documented response schemas. The app has its own engine
and data directory: generated requests create and delete collections.

Hypothesis drives each operation directly (``APIOperation.as_strategy``):
schemathesis' lazy pytest fixture loader does not run on pytest 9.
"""

from __future__ import annotations

import pytest
import schemathesis
from api_testkit import app_config, engine_settings
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from api.app import create_app
from api.openapi import OPERATIONS
from search.engine import SearchEngine
from search.types import Document

pytestmark = pytest.mark.integration

EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 10}
# Negative data needs an input to break: a body or a path parameter.
CASES = [
    pytest.param(op, mode, id=f"{op.method.upper()} {op.path} {mode.value}")
    for op in OPERATIONS
    for mode in EXAMPLES
    if mode is GenerationMode.POSITIVE or op.body or op.multipart or "{" in op.path
]


@pytest.fixture(scope="module")
def fuzz_schema(engine, tmp_path_factory):
    settings_ = engine_settings(tmp_path_factory.mktemp("fuzz"))
    fuzz = SearchEngine(settings_, embedder=engine.embedder, reranker=engine.reranker)
    fuzz.index([Document(id=f"d{i}", text=f"storm safety tip number {i}") for i in range(5)])
    yield schemathesis.openapi.from_wsgi("/openapi.json", create_app(app_config(settings_), fuzz))
    fuzz.close()


@pytest.mark.parametrize(("op", "mode"), CASES)
def test_generated_requests_never_fail_on_the_server(fuzz_schema, op, mode):
    operation = fuzz_schema[op.path][op.method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        response = case.call()
        checks = [not_a_server_error]
        if mode is GenerationMode.POSITIVE:
            checks.append(response_schema_conformance)
        case.validate_response(response, checks=checks)

    check()
