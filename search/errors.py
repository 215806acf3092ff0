"""Typed errors of the engine.

Every error carries its data as attributes and pickles cleanly (it may cross a
Celery boundary), and every one has a stable ``code`` that the API maps to an
HTTP status in one place. ``str(error)`` is a one-line message for a person.
"""

from __future__ import annotations

from typing import Any


class SieveError(Exception):
    """Base of every error the engine raises on purpose."""

    code = "internal"

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword data would be lost by the default Exception pickling.
        return (_rebuild, (type(self), self.message, self.data))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[SieveError], message: str, data: dict[str, Any]) -> SieveError:
    return cls(message, **data)


class InvalidRequest(SieveError):
    """The caller asked for something malformed (empty query, unknown mode, bad filter)."""

    code = "invalid_request"


class NotFound(SieveError):
    """A document, collection or data set file does not exist."""

    code = "not_found"


class Conflict(SieveError):
    """The thing to create already exists (a collection of that name)."""

    code = "conflict"


class ConfigError(SieveError):
    """A setting is missing or has a value the engine cannot use."""

    code = "config_error"


class ModelNotFound(SieveError):
    """Model weights could not be found locally and may not be downloaded."""

    code = "model_not_found"


class ModelIncompatible(SieveError):
    """The installed transformers or torch is too old for the model."""

    code = "model_incompatible"


class BackendUnavailable(SieveError):
    """A backend (BM25 engine, vector engine, registry, reranker, cache) failed or timed out."""

    code = "backend_unavailable"

    def __init__(self, message: str, *, backend: str, **data: Any) -> None:
        super().__init__(message, backend=backend, **data)
        self.backend = backend


class IndexLocked(BackendUnavailable):
    """An embedded index's folder is owned by another process (its lock is held).

    Not a passing failure of one leg: a search fails with it instead of degrading
    to the other leg, so that a second program on a data directory a server holds
    is told so rather than answered by BM25 alone. ``path`` is the locked folder.
    """


class IndexingError(SieveError):
    """One document could not be indexed; the others in its batch are unaffected."""

    code = "indexing_failed"


class LoadError(SieveError):
    """An input file (or one line of it) could not be read as documents."""

    code = "load_error"

    def __init__(self, message: str, *, path: str, line: int | None = None, **data: Any) -> None:
        super().__init__(message, path=path, line=line, **data)
        self.path = path
        self.line = line


class RegistryError(SieveError):
    """The document registry cannot be trusted; nothing may be repaired on its word."""

    code = "registry_error"


class RegistryCorrupt(RegistryError):
    """The registry database is damaged, unreadable, or of a schema this Sieve does not read."""

    code = "registry_corrupt"


class RegistryMismatch(RegistryError):
    """The indexes were written by another registry than the one configured.

    The configured registry is missing, empty, or was replaced: restore it, or
    rebuild one from the indexes (``search.recover.recover_registry``).
    """

    code = "registry_mismatch"
