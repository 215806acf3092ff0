"""What the registry hands out: frozen records of documents, and the version rule.

Values only (no SQL, no session): ``search.registry`` builds them from its rows,
and every other module reads them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from search.errors import InvalidRequest
from search.types import Document

BACKENDS = ("keyword", "vector")


@dataclass(frozen=True)
class DocumentRecord:
    """One document as the registry holds it: content and per-backend indexing state."""

    collection: str
    id: str
    version: int
    content_hash: str
    title: str
    text: str
    metadata: Mapping[str, Any]
    content_type: str
    source: str
    # pending: recorded, not yet in both indexes; indexed; failed (see error).
    status: str
    # The version each index holds (None: never written there).
    keyword_version: int | None
    vector_version: int | None
    chunks: int
    error: str | None
    updated_at: datetime

    def behind(self) -> tuple[str, ...]:
        """The backends (of ``BACKENDS``) that do not hold the current version.

        The one home of the version rule: a document is fully indexed when
        every backend holds its current version.
        """
        held = {"keyword": self.keyword_version, "vector": self.vector_version}
        return tuple(backend for backend in BACKENDS if held[backend] != self.version)

    @property
    def indexed(self) -> bool:
        """Whether both indexes hold the current version (whatever ``status`` says)."""
        return not self.behind()

    def document(self) -> Document:
        """The ``Document`` this record stores."""
        return Document(
            id=self.id,
            text=self.text,
            title=self.title,
            metadata=dict(self.metadata),
            source=self.source,
            content_type=self.content_type,
        )


@dataclass(frozen=True)
class DocumentSummary:
    """A document as a listing shows it: no text, its indexing state."""

    id: str
    title: str
    status: str  # pending, indexed or failed (then ``error`` says why)
    chunks: int
    error: str | None
    updated_at: datetime


STATUSES = ("pending", "indexed", "failed")
MAX_PREFIX = 512  # a document id's own limit
MAX_METADATA_FILTERS = 32  # as /v1/search filters
# Keys a listing may filter on: plain names, so one can go into a JSON path unquoted.
METADATA_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}")


@dataclass(frozen=True)
class ListFilter:
    """Which documents a listing shows: an id prefix, one state, metadata equalities.

    ``metadata`` maps a key to the values any of which it may equal (compared as
    ``search.types.facet_terms`` writes scalars: strings as they are, integers in
    decimal, booleans as ``true``/``false``). Validated here: ``InvalidRequest``
    names the bad part in one line.
    """

    prefix: str = ""
    status: str | None = None
    metadata: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.prefix) > MAX_PREFIX:
            raise InvalidRequest(
                f"prefix: at most {MAX_PREFIX} characters, not {len(self.prefix)}",
                prefix=self.prefix[:40],
            )
        if self.status is not None and self.status not in STATUSES:
            raise InvalidRequest(
                f"status: one of {', '.join(STATUSES)}, not {self.status!r}", status=self.status
            )
        if len(self.metadata) > MAX_METADATA_FILTERS:
            raise InvalidRequest(f"at most {MAX_METADATA_FILTERS} metadata filters")
        for key, values in self.metadata.items():
            if not METADATA_KEY.fullmatch(key):
                raise InvalidRequest(
                    f"metadata filter key {key!r}: 1-64 of letters, digits, '_', '.', ':' "
                    "or '-', starting with a letter, digit or '_'",
                    key=key,
                )
            if not values:
                raise InvalidRequest(f"metadata filter {key!r} has no value", key=key)


@dataclass(frozen=True)
class RegistryIdentity:
    """Who a registry is: its id (recorded by the indexes it writes) and schema version."""

    id: str
    schema_version: int
    # True when this process created the registry: its database was missing or empty.
    created: bool


@dataclass(frozen=True)
class Restored:
    """A document rebuilt from the indexes (``search.recover``), with what each index holds."""

    document: Document
    version: int
    keyword_version: int | None
    vector_version: int | None
    chunks: int


@dataclass(frozen=True)
class Staged:
    """A document recorded in the registry and what indexing it needs."""

    document: Document
    version: int
    # False when the content is unchanged and both indexes already hold it.
    needs_indexing: bool


def content_hash(doc: Document) -> str:
    """Hash of everything that changes what the indexes hold for a document."""
    payload = json.dumps(
        [doc.title, doc.text, doc.content_type, dict(doc.metadata)],
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
