"""``PassageReader``: a rerank worker reads the passages it scores from the shared chunk store.

The API sends an indexed passage as ``[collection, chunk id, digest]``
(``search.passages``) instead of its text: a top-50 rerank then carries a few
kilobytes, not the passages' tens. The worker opens each collection's keyword
index (Elasticsearch in a distributed deployment; a tantivy folder it can read
beside its owner) on first use, read-only, in the process that scores.

A passage it cannot read (the chunk is gone, was rewritten since the search, the
index is down or not reachable from here) is reported unread, never guessed: the
client sends that one as text. Reading fails only that way, never the task.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from search.config import Settings
from search.errors import SieveError
from search.keyword import KeywordIndex, open_keyword_index
from search.passages import PassageRef, read_passages

log = logging.getLogger(__name__)


def parse_refs(raw: Sequence[Any] | None, count: int) -> list[PassageRef | None]:
    """The task's ``refs`` argument (``[collection, chunk_id, digest]`` or None per passage)."""
    if raw is None:
        return [None] * count
    if len(raw) != count:
        raise ValueError(f"{len(raw)} refs for {count} passages")
    return [None if r is None else PassageRef(str(r[0]), str(r[1]), str(r[2])) for r in raw]


class PassageReader:
    """Reads referenced passages from each collection's keyword index (opened once per process)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._indexes: dict[str, KeywordIndex] = {}
        self._pid = 0
        self._lock = threading.Lock()

    def _index(self, collection: str) -> KeywordIndex:
        with self._lock:
            if self._pid != os.getpid():  # never an index object inherited through a fork
                self._indexes, self._pid = {}, os.getpid()
            index = self._indexes.get(collection)
            if index is None:
                index = self._indexes[collection] = open_keyword_index(self.settings, collection)
            return index

    def read(self, refs: Sequence[PassageRef | None]) -> list[str | None]:
        """Each ref's passage, or None where it cannot be read as the ref describes it."""
        out: list[str | None] = [None] * len(refs)
        by_collection: dict[str, list[tuple[int, PassageRef]]] = {}
        for position, ref in enumerate(refs):
            if ref is not None:
                by_collection.setdefault(ref.collection, []).append((position, ref))
        for collection, wanted in by_collection.items():
            positions = [position for position, _ in wanted]
            try:
                texts = read_passages(self._index(collection), [ref for _, ref in wanted])
            except SieveError as exc:
                # Not this task's failure: the client sends these passages as text.
                log.warning("cannot read passages of %r: %s", collection, exc)
                continue
            for position, text in zip(positions, texts, strict=True):
                out[position] = text
        return out

    def close(self) -> None:
        """Close the indexes this process opened."""
        with self._lock:
            indexes, self._indexes = self._indexes, {}
            if self._pid == os.getpid():
                for index in indexes.values():
                    index.close()
