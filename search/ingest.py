"""Read documents from files: BEIR corpus.jsonl, JSONL, .txt, .md, .html, folders.

Loading never stops at a bad record: each problem is yielded as a
``LoadError`` (with file and line) next to the good documents, so a caller
indexes everything that can be indexed and reports the rest.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from search.errors import LoadError
from search.text.clean import html_title
from search.types import Document

TEXT_SUFFIXES = {
    ".txt": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
PDF_SUFFIX = ".pdf"
# The one list of file types Sieve reads, from disk (``sieve index``) or uploaded.
SUFFIXES = tuple(sorted([*TEXT_SUFFIXES, *JSONL_SUFFIXES, PDF_SUFFIX]))
SUPPORTED = ", ".join(SUFFIXES)

Loaded = Document | LoadError


def iter_paths(paths: Sequence[str | Path]) -> Iterator[Loaded]:
    """Documents from files and folders (recursively, in sorted order)."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and _supported(p))
            if not files:
                yield LoadError(f"{path}: no {SUPPORTED} files in this folder", path=str(path))
            for file in files:
                yield from iter_file(file, doc_id=file.relative_to(path).as_posix())
        elif path.is_file():
            if not _supported(path):
                yield LoadError(f"{path}: unsupported file type (use {SUPPORTED})", path=str(path))
                continue
            yield from iter_file(path, doc_id=path.name)
        else:
            yield LoadError(f"{path}: no such file or folder", path=str(path))


def _supported(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


def iter_file(path: Path, doc_id: str) -> Iterator[Loaded]:
    """Documents of one file; a text file is one document with id ``doc_id``."""
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        yield from iter_jsonl(path)
        return
    if suffix == PDF_SUFFIX:
        try:
            data = path.read_bytes()
        except OSError as exc:
            yield LoadError(f"{path}: cannot read: {exc}", path=str(path))
            return
        yield pdf_document(data, str(path), doc_id)
        return
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        yield LoadError(f"{path}: cannot read as UTF-8 text: {exc}", path=str(path))
        return
    content_type = TEXT_SUFFIXES[suffix]
    title = html_title(text) if content_type == "html" else _first_heading(text, content_type)
    yield Document(
        id=doc_id,
        text=text,
        title=title,
        metadata={"source_type": content_type},
        source=str(path),
        content_type=content_type,
    )


def pdf_document(data: bytes, name: str, doc_id: str) -> Loaded:
    """The text of a PDF's pages as one document, or a ``LoadError`` saying why not."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
        title = (reader.metadata.title if reader.metadata else None) or ""
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types on a malformed file
        return LoadError(f"{name}: not a readable PDF: {type(exc).__name__}: {exc}", path=name)
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text:
        return LoadError(f"{name}: no extractable text (a scanned PDF needs OCR first)", path=name)
    return Document(
        id=doc_id,
        text=text,
        title=str(title).strip(),
        metadata={"source_type": "pdf", "pages": len(pages)},
        source=name,
        content_type="text",
    )


def _first_heading(text: str, content_type: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if content_type == "markdown":
            return line.lstrip("#").strip() if line.startswith("#") else ""
        return ""
    return ""


def iter_jsonl(path: Path) -> Iterator[Loaded]:
    """One document per line: ``_id`` or ``id``, ``text``, optional ``title``, ``metadata``."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        yield LoadError(f"{path}: cannot open: {exc}", path=str(path))
        return
    with handle:
        lineno = 0
        while True:
            lineno += 1
            try:
                line = handle.readline()
            except UnicodeDecodeError as exc:
                yield LoadError(f"{path}:{lineno}: not UTF-8: {exc}", path=str(path), line=lineno)
                return
            if not line:
                return
            if not line.strip():
                continue
            yield parse_record(line, path, lineno)


def parse_record(line: str, path: Path, lineno: int) -> Loaded:
    """Validate one JSONL record, naming the file, line and problem when it is bad."""
    where = f"{path}:{lineno}"
    try:
        record: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        return LoadError(f"{where}: malformed JSON: {exc.msg}", path=str(path), line=lineno)
    if not isinstance(record, dict):
        return LoadError(f"{where}: expected a JSON object", path=str(path), line=lineno)
    doc_id = record.get("_id", record.get("id"))
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    if not isinstance(doc_id, str) or not doc_id.strip():
        return LoadError(f"{where}: missing or invalid '_id'/'id'", path=str(path), line=lineno)
    text, title = record.get("text", ""), record.get("title", "")
    if not isinstance(text, str) or not isinstance(title, str):
        return LoadError(
            f"{where}: 'text' and 'title' must be strings", path=str(path), line=lineno
        )
    if not text.strip() and not title.strip():
        return LoadError(f"{where}: document {doc_id!r} has no text", path=str(path), line=lineno)
    metadata = record.get("metadata", {})
    if not isinstance(metadata, dict):
        return LoadError(f"{where}: 'metadata' must be an object", path=str(path), line=lineno)
    content_type = record.get("content_type", "text")
    if content_type not in ("text", "markdown", "html"):
        return LoadError(
            f"{where}: 'content_type' must be text, markdown or html", path=str(path), line=lineno
        )
    return Document(
        id=doc_id,
        text=text if text.strip() else title,
        title=title,
        metadata=metadata,
        source=str(path),
        content_type=content_type,
    )
