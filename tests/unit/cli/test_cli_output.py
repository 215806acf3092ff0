"""The command line's human output: every degraded or skipped stage with its reason."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from api.cli.context import stage_notes
from api.cli.search import print_result
from search.types import SearchResult

pytestmark = pytest.mark.unit


def test_degraded_and_skipped_stages_name_their_reasons():
    result = SearchResult(
        query="q",
        mode="hybrid",
        hits=[],
        timings_ms={},
        degraded=["rerank"],
        degraded_reasons={"rerank": "rerank missed its 2 s deadline"},
        skipped={"vector": "the embedder knows no Chinese"},
    )
    assert stage_notes(result) == [
        "degraded rerank: rerank missed its 2 s deadline",
        "skipped vector: the embedder knows no Chinese",
    ]
    out = CliRunner().invoke(_printer(result)).output
    assert "note: degraded rerank: rerank missed its 2 s deadline" in out


def _printer(result: SearchResult) -> click.Command:
    @click.command()
    def show() -> None:
        print_result(result)

    return show
