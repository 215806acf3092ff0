"""The evaluation index cache key: what a cached index was built from."""

from __future__ import annotations

import pytest

from search.config import Settings
from search.evaluate import index_fingerprint
from search.text import analysis_version
from search.text.analyze import ANALYSIS_VERSION, CHINESE_STOPWORDS

pytestmark = pytest.mark.unit

CORPUS = "0" * 64


def test_an_analysis_change_invalidates_the_cached_index():
    settings = Settings()
    built = index_fingerprint(settings, CORPUS, analysis_version())
    assert built == index_fingerprint(settings, CORPUS, analysis_version())
    for changed in (
        analysis_version(ANALYSIS_VERSION + 1),
        analysis_version(chinese=CHINESE_STOPWORDS - {"的"}),
    ):
        assert index_fingerprint(settings, CORPUS, changed) != built


@pytest.mark.parametrize(
    "change", [{"chunk_tokens": 128}, {"embed_model": "/m/e5"}, {"embed_pooling": "cls"}]
)
def test_index_shaping_settings_invalidate_it_too(change):
    before = index_fingerprint(Settings(), CORPUS, analysis_version())
    after = index_fingerprint(Settings().with_overrides(**change), CORPUS, analysis_version())
    assert after != before


def test_query_time_settings_do_not():
    before = index_fingerprint(Settings(), CORPUS, analysis_version())
    tuned = Settings().with_overrides(fusion="rrf", candidates=50, embed_languages=("*",))
    assert index_fingerprint(tuned, CORPUS, analysis_version()) == before
