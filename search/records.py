"""What the registry hands out: frozen records of documents, and the version rule.

Values only (no SQL, no session): ``search.registry`` builds them from its rows,
and every other module reads them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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
