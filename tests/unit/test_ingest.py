import json

import pytest
from support.pdf import tiny_pdf

from search.errors import LoadError
from search.ingest import SUPPORTED, iter_paths
from search.types import Document

pytestmark = pytest.mark.unit


def split(items):
    docs = [i for i in items if isinstance(i, Document)]
    errors = [i for i in items if isinstance(i, LoadError)]
    return docs, errors


def test_malformed_jsonl_lines_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "c.jsonl"
    lines = [
        json.dumps({"_id": "a", "title": "A", "text": "alpha"}),
        "{not json",
        json.dumps(["a list"]),
        json.dumps({"text": "no id"}),
        "",
        json.dumps({"id": 7, "text": "int id", "metadata": {"k": "v"}}),
        json.dumps({"_id": "b", "text": 5}),
        json.dumps({"_id": "c", "text": "x", "metadata": "nope"}),
        json.dumps({"_id": "e", "text": "  "}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    docs, errors = split(list(iter_paths([path])))
    assert [d.id for d in docs] == ["a", "7"]
    assert docs[1].metadata == {"k": "v"}
    assert [e.line for e in errors] == [2, 3, 4, 7, 8, 9]
    assert all(e.path == str(path) for e in errors)
    assert f"{path}:2: malformed JSON" in str(errors[0])


def test_folder_is_read_recursively_with_relative_ids(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("plain text", encoding="utf-8")
    (tmp_path / "sub" / "b.md").write_text("# Heading\n\nBody *text*.", encoding="utf-8")
    (tmp_path / "sub" / "c.html").write_text(
        "<html><head><title>Page</title></head><body><p>Hi</p></body></html>", encoding="utf-8"
    )
    (tmp_path / "skip.bin").write_bytes(b"\x00\x01")
    docs, errors = split(list(iter_paths([tmp_path])))
    assert not errors
    by_id = {d.id: d for d in docs}
    assert sorted(by_id) == ["a.txt", "sub/b.md", "sub/c.html"]
    assert by_id["sub/b.md"].content_type == "markdown" and by_id["sub/b.md"].title == "Heading"
    assert by_id["sub/c.html"].content_type == "html" and by_id["sub/c.html"].title == "Page"


def test_missing_unsupported_and_undecodable_files(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    other = tmp_path / "x.pdfx"
    other.write_text("x")
    docs, errors = split(list(iter_paths([tmp_path / "missing", other, bad])))
    assert not docs and len(errors) == 3
    assert "no such file" in str(errors[0])
    assert "unsupported file type" in str(errors[1])
    assert "UTF-8" in str(errors[2])


def test_pdf_files_are_read_like_uploads(tmp_path):
    (tmp_path / "guide.pdf").write_bytes(tiny_pdf("Tyre pressure guide", title="Tyres"))
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    loaded = list(iter_paths([tmp_path]))
    docs = [d for d in loaded if isinstance(d, Document)]
    errors = [e for e in loaded if isinstance(e, LoadError)]
    assert [(d.id, d.title, d.metadata["source_type"]) for d in docs] == [
        ("guide.pdf", "Tyres", "pdf")
    ]
    assert "Tyre pressure guide" in docs[0].text
    assert len(errors) == 1 and "broken.pdf: not a readable PDF" in str(errors[0])
    assert ".pdf" in SUPPORTED
