"""Uploaded files as documents: .jsonl, .txt, .md, .html and .pdf.

Text files and JSONL go through ``search.ingest`` (the same rules as
``sieve index``), PDFs too (``search.ingest.pdf_document``). As in ``search.ingest``,
a bad file or line is yielded as a ``LoadError`` next to the good documents,
so one malformed line never stops the rest of an upload.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath, PureWindowsPath

from search.errors import InvalidRequest, LoadError
from search.ingest import (
    JSONL_SUFFIXES,
    PDF_SUFFIX,
    SUFFIXES,
    iter_file,
    parse_record,
    pdf_document,
)
from search.types import Document

SUPPORTED = SUFFIXES

Loaded = Document | LoadError


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its base name (the document id of a one-document file) and bytes."""

    name: str
    data: bytes


def upload_name(filename: str | None) -> str:
    """The base name of an uploaded file, checked; ``InvalidRequest`` when unusable."""
    # Browsers send a base name, but some clients send a whole path (either style).
    name = PureWindowsPath(PurePosixPath(filename or "").name).name.strip()
    if not name or name in (".", ".."):
        raise InvalidRequest("every uploaded file needs a file name", filename=filename or "")
    return name


def unsupported(name: str) -> str | None:
    """Why a file of this name cannot be read (its type), or None when it can."""
    if Path(name).suffix.lower() in SUPPORTED:
        return None
    return f"{name}: unsupported file type; upload one of {', '.join(SUPPORTED)}"


def read_uploads(files: Iterable[tuple[str | None, bytes]]) -> tuple[Upload, ...]:
    """Uploads from ``(filename, bytes)`` pairs; ``InvalidRequest`` naming any bad or
    repeated name, or the type when no file is of a type Sieve reads.

    A one-document file's name is its document id, so two files of the same base
    name (``a/notes.txt`` and ``b/notes.txt``) would silently overwrite each other:
    the whole request is refused instead, before anything is accepted. A file of
    an unsupported type beside readable ones is refused on its own
    (``load_files``), as an empty one is.
    """
    uploads = tuple(Upload(upload_name(filename), data) for filename, data in files)
    seen: set[str] = set()
    for upload in uploads:
        if upload.name in seen:
            raise InvalidRequest(
                f"{upload.name}: two uploaded files have this name, and a file's name is its "
                "document id; rename one or upload them separately",
                filename=upload.name,
            )
        seen.add(upload.name)
    why = [unsupported(upload.name) for upload in uploads]
    if uploads and all(why):
        raise InvalidRequest(str(why[0]), filename=uploads[0].name)
    return uploads


def count_documents(upload: Upload) -> int:
    """How many documents the file holds at most (non-empty lines of JSONL, else one;
    none for a type that is not read)."""
    if unsupported(upload.name):
        return 0
    if Path(upload.name).suffix.lower() in JSONL_SUFFIXES:
        return sum(1 for line in upload.data.splitlines() if line.strip())
    return 1


def document_sizes(upload: Upload) -> Iterator[tuple[str, int]]:
    """``(name, bytes)`` of each document of the file: each JSONL line, or the whole file
    (nothing for a type that is not read: it holds no document)."""
    if unsupported(upload.name):
        return
    if Path(upload.name).suffix.lower() in JSONL_SUFFIXES:
        for lineno, line in enumerate(upload.data.split(b"\n"), start=1):
            if line.strip():
                yield f"{upload.name}:{lineno}", len(line)
    else:
        yield upload.name, len(upload.data)


@dataclass(frozen=True)
class FileResult:
    """What one uploaded file gave: its documents, and a line for each bad part.

    A file is ``accepted`` when it gave at least one document, else ``refused``
    (every line malformed, unreadable, or empty, or a type Sieve does not read);
    either way its error lines go into the task's ``errors`` too.
    """

    name: str
    documents: tuple[Document, ...]
    errors: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        """The file's entry in the upload's answer."""
        return {
            "name": self.name,
            "state": "accepted" if self.documents else "refused",
            "documents": len(self.documents),
            "errors": list(self.errors),
        }


def load_files(uploads: Iterable[Upload]) -> list[FileResult]:
    """Every upload read into documents, file by file (in the order given)."""
    results: list[FileResult] = []
    for upload in uploads:
        why = unsupported(upload.name)
        if why is not None:
            results.append(FileResult(upload.name, (), (why,)))
            continue
        one_document = Path(upload.name).suffix.lower() not in JSONL_SUFFIXES
        documents: list[Document] = []
        errors: list[str] = []
        for item in load_upload(upload):
            if isinstance(item, LoadError):
                errors.append(str(item))
            elif one_document and not item.text.strip():
                # A one-document file with no text: refused now, not failed in the task.
                errors.append(f"{upload.name}: empty file (no text in it)")
            else:
                documents.append(item)
        if not documents and not errors:
            errors.append(f"{upload.name}: empty file (no documents in it)")
        results.append(FileResult(upload.name, tuple(documents), tuple(errors)))
    return results


def load_upload(upload: Upload) -> Iterator[Loaded]:
    """The documents of one uploaded file, with a ``LoadError`` for each bad part."""
    suffix = Path(upload.name).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        yield from _jsonl(upload)
    elif suffix == PDF_SUFFIX:
        yield pdf_document(upload.data, upload.name, upload.name)
    else:
        yield from _text(upload)


def _jsonl(upload: Upload) -> Iterator[Loaded]:
    name = Path(upload.name)
    for lineno, raw in enumerate(upload.data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield LoadError(f"{name}:{lineno}: not UTF-8: {exc}", path=str(name), line=lineno)
            continue
        yield parse_record(line, name, lineno)


def _text(upload: Upload) -> Iterator[Loaded]:
    # Through a temporary file so that titles, content types and errors follow
    # exactly the rules of search.ingest (what `sieve index` does with files).
    with tempfile.TemporaryDirectory(prefix="sieve-upload-") as folder:
        path = Path(folder) / upload.name
        path.write_bytes(upload.data)
        for item in iter_file(path, doc_id=upload.name):
            if isinstance(item, Document):
                yield replace(item, source=upload.name)
            else:
                message = str(item).replace(str(path), upload.name)
                yield LoadError(message, path=upload.name, line=item.line)
