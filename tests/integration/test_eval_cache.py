"""``sieve eval``'s cached index: reused while its fingerprint holds, rebuilt after an
analyser change (real tantivy, Qdrant Edge and MiniLM on a generated BEIR folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.beir_data import write_beir

from search.config import Settings
from search.engine import SearchEngine
from search.evaluate import Dataset, prepare_index
from search.text import analysis_version

pytestmark = pytest.mark.integration


def test_an_index_built_under_other_analysis_rules_is_rebuilt(tmp_path: Path) -> None:
    dataset = Dataset.open(write_beir(tmp_path / "tiny-beir", n_docs=20), "test")
    settings = Settings.from_env({}).with_overrides(data_dir=tmp_path / "data")
    eval_settings = prepare_index(settings, dataset)
    marker = eval_settings.data_dir / "fingerprint.json"
    assert json.loads(marker.read_text())["analysis"] == analysis_version()
    # A file the indexer never writes: it survives a reuse and not a rebuild.
    sentinel = eval_settings.data_dir / "sentinel"
    sentinel.write_text("")
    prepare_index(settings, dataset)
    assert sentinel.exists(), "an unchanged fingerprint reuses the index"

    stale = json.loads(marker.read_text()) | {"analysis": "0-built-before-the-change"}
    marker.write_text(json.dumps(stale))
    prepare_index(settings, dataset)
    assert not sentinel.exists(), "an index built by other analysis rules must be rebuilt"
    assert json.loads(marker.read_text())["analysis"] == analysis_version()
    with SearchEngine(eval_settings, reranker=None) as engine:
        assert engine.stats()["documents"] == 20
