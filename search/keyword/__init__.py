"""The BM25 leg: a ``KeywordIndex`` per collection, tantivy or Elasticsearch.

Importing this package imports neither engine; ``open_keyword_index`` imports
the configured one when it is first asked for.
"""

from __future__ import annotations

from search.config import Settings
from search.errors import InvalidRequest
from search.keyword.base import Candidates, KeywordIndex

__all__ = ["Candidates", "KeywordIndex", "open_keyword_index"]


def open_keyword_index(settings: Settings, collection: str) -> KeywordIndex:
    """The keyword index of ``collection`` on the configured backend.

    Cheap: nothing is opened or connected until the index is first used.
    """
    # The name becomes a directory (or an index) name: no path tricks.
    if not collection or collection in (".", "..") or "/" in collection or "\\" in collection:
        raise InvalidRequest(f"invalid collection name {collection!r}", collection=collection)
    if settings.keyword_backend == "elasticsearch":
        from search.keyword.elasticsearch_index import ElasticsearchKeywordIndex

        return ElasticsearchKeywordIndex(settings, collection)
    from search.keyword.tantivy_index import TantivyKeywordIndex

    return TantivyKeywordIndex(settings.data_dir / "collections" / collection / "tantivy")
