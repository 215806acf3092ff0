"""``sieve tune``'s engine side on real engines: tuned on judged queries, stored, applied."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from search.config import Settings
from search.engine import FUSION_SETTING, SearchEngine
from search.errors import InvalidRequest
from search.fusion import FusionChoice
from search.fusion_tuning import explain, tune_dataset
from search.ingest import iter_paths
from search.registry import Registry
from search.types import Document, SearchRequest

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "sample"


@pytest.fixture
def settings(tmp_path):
    return Settings.from_env({}).with_overrides(data_dir=tmp_path / "data")


def judged_copy(root: Path) -> Path:
    """The sample as a data set whose judged queries are a ``train`` split."""
    root.mkdir()
    for name in ("corpus.jsonl", "queries.jsonl"):
        shutil.copy(SAMPLE / name, root / name)
    (root / "qrels").mkdir()
    shutil.copy(SAMPLE / "qrels" / "test.tsv", root / "qrels" / "train.tsv")
    return root


def stored(settings: Settings) -> dict:
    registry = Registry(settings.registry)
    try:
        return registry.collection_setting(settings.collection, FUSION_SETTING)
    finally:
        registry.close()


def test_tuning_stores_its_evidence_and_refuses_a_test_split(settings, tmp_path):
    dataset = judged_copy(tmp_path / "judged")
    tuning, entry = tune_dataset(settings, str(dataset), split="train")
    assert entry == stored(settings)
    assert entry["chosen_on"] == "judged/train" and entry["queries"] == tuning.queries >= 20
    assert entry["default"] == FusionChoice("bounded", (0.3, 0.7)).entry()
    # Adopted or not, what is stored says which and why; a non-adopted choice is the default.
    assert entry["adopted"] == tuning.adopted
    if not tuning.adopted:
        assert FusionChoice.of(entry) == tuning.default
    with pytest.raises(InvalidRequest, match="tune on train or dev"):
        tune_dataset(settings, str(dataset), split="test")


def test_an_adopted_fusion_is_the_collections_default_and_says_so(settings):
    evidence = {"cv_ndcg@10": 0.8, "default_ndcg@10": 0.7, "wins": 9, "losses": 1}
    chosen = FusionChoice("weighted_rrf", (0.2, 0.8), 10).entry()
    adopted = {**chosen, **evidence, "adopted": True, "best": chosen}
    adopted.update(p_value=0.01, queries=24, folds=5)
    registry = Registry(settings.registry)
    registry.set_collection_setting(settings.collection, FUSION_SETTING, adopted)
    registry.close()
    with SearchEngine(settings) as engine:
        docs = [d for d in iter_paths([SAMPLE / "corpus.jsonl"]) if isinstance(d, Document)]
        engine.index(docs)
        result = engine.search(SearchRequest(query="how to stop a nosebleed", top_k=5))
        assert (result.fusion, result.fusion_weights) == ("weighted_rrf", (0.2, 0.8))
        assert result.fusion_source == "collection"
        # The request's own fusion wins, with the configured weights for another method.
        asked = engine.search(SearchRequest(query="nosebleed", top_k=5, fusion="minmax"))
        assert (asked.fusion_source, asked.fusion_weights) == ("request", (0.3, 0.7))
        stats = engine.stats()
        assert stats["fusion"] == "weighted_rrf (0.2, 0.8) k=10 (collection)"
        assert stats["fusion_tuning"] == adopted
        assert explain(adopted).startswith("weighted_rrf (0.2, 0.8) k=10 adopted")
