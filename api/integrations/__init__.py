"""Retrievers for LLM frameworks, backed by a Sieve server through ``api.client``.

- ``api.integrations.langchain.SieveRetriever`` (``pip install sieve-search[langchain]``)
- ``api.integrations.llamaindex.SieveLlamaRetriever`` (``pip install sieve-search[llamaindex]``)

Importing this package needs neither framework; each module imports its own
when it is imported, and says which extra to install when it is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Keys a hit's provenance adds to a framework document's metadata. They win over
# a document metadata field of the same name: a user field called "score" must
# not pass itself off as the search score.
PROVENANCE_KEYS = ("doc_id", "title", "score", "rank", "chunk_id", "offsets")


def hit_metadata(hit: Mapping[str, Any]) -> dict[str, Any]:
    """A search hit's document metadata plus its provenance (``PROVENANCE_KEYS``)."""
    out: dict[str, Any] = dict(hit.get("metadata") or {})
    out.update({key: hit.get(key) for key in PROVENANCE_KEYS})
    return out


def missing_extra(framework: str, extra: str) -> str:
    """The message of the ImportError raised when an optional framework is absent."""
    return (
        f"this Sieve integration needs {framework}, which is not installed: "
        f"pip install sieve-search[{extra}]"
    )
