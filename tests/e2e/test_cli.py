"""The command line end to end, as a user runs it, on the sample corpus.

Each step is a real ``sieve`` process against one data directory: index,
search, update, delete, re-index, and the judged sample queries in hybrid mode.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample"
SIEVE = [sys.executable, "-m", "api"]


def sieve(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIEVE_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [*SIEVE, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"sieve {args} exited {proc.returncode}: {proc.stderr}")
    return proc


def search_ids(data_dir: Path, query: str, mode: str = "hybrid", top_k: int = 10) -> list[str]:
    out = sieve(data_dir, "search", query, "--mode", mode, "--top-k", str(top_k), "--json").stdout
    return [hit["doc_id"] for hit in json.loads(out.strip().splitlines()[-1])["hits"]]


def stats(data_dir: Path) -> dict:
    return json.loads(sieve(data_dir, "stats", "--json").stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> tuple[Path, Path]:
    data = tmp_path_factory.mktemp("data")
    corpus_dir = tmp_path_factory.mktemp("corpus")
    shutil.copy(SAMPLE / "corpus.jsonl", corpus_dir / "corpus.jsonl")
    shutil.copytree(SAMPLE / "docs", corpus_dir / "docs")
    out = sieve(data, "index", str(corpus_dir / "corpus.jsonl"), str(corpus_dir / "docs")).stdout
    assert "failed 0" in out
    return data, corpus_dir


def corpus_ids() -> list[str]:
    with (SAMPLE / "corpus.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line)["_id"] for line in handle if line.strip()]


def test_index_counts_every_document_in_both_indexes(indexed):
    data, _ = indexed
    s = stats(data)
    expected = len(corpus_ids()) + len(list((SAMPLE / "docs").iterdir()))
    assert s["documents"] == s["indexed"] == expected
    assert s["keyword_chunks"] == s["vector_chunks"] == s["chunks"] >= expected


def test_reindexing_the_same_files_changes_nothing(indexed):
    data, corpus = indexed
    before = stats(data)
    out = sieve(data, "index", str(corpus / "corpus.jsonl"), str(corpus / "docs")).stdout
    assert "indexed 0" in out and f"unchanged {before['documents']}" in out
    assert stats(data) == before


def test_every_mode_answers_and_json_has_provenance(indexed):
    data, _ = indexed
    for mode in ("bm25", "vector", "hybrid"):
        assert search_ids(data, "how do I look after a cast iron pan", mode=mode)
    raw = sieve(data, "search", "cast iron pan", "--json").stdout.strip().splitlines()[-1]
    result = json.loads(raw)
    assert set(result["timings_ms"]) >= {"analyze", "bm25", "embed", "vector", "fusion", "total"}
    hit = result["hits"][0]
    assert hit["bm25"]["rank"] >= 1 and hit["vector"]["rank"] >= 1 and hit["fused"]["rank"] == 1


def test_judged_sample_queries_find_their_documents_in_the_top_3(indexed, tmp_path):
    data, _ = indexed
    run_file = tmp_path / "run.json"
    sieve(data, "eval", str(SAMPLE), "--mode", "hybrid", "--save-run", str(run_file), "--json")
    run = json.loads(run_file.read_text())["hybrid"]
    qrels: dict[str, set[str]] = {}
    with (SAMPLE / "qrels" / "test.tsv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if int(row["score"]) > 0:
                qrels.setdefault(row["query-id"], set()).add(row["corpus-id"])
    misses = {q: run[q][:3] for q, rel in qrels.items() if not rel & set(run[q][:3])}
    assert not misses, f"judged documents missing from the top 3: {misses}"


def test_update_then_delete_a_document(indexed, tmp_path):
    data, _ = indexed
    update = tmp_path / "update.jsonl"
    update.write_text(
        json.dumps({"_id": "zz-update", "title": "Quokka care", "text": "Quokkas eat grasses."})
        + "\n",
        encoding="utf-8",
    )
    sieve(data, "index", str(update))
    assert search_ids(data, "quokka grasses", mode="bm25")[0] == "zz-update"
    update.write_text(
        json.dumps({"_id": "zz-update", "title": "Wombat care", "text": "Wombats dig burrows."})
        + "\n",
        encoding="utf-8",
    )
    sieve(data, "index", str(update))
    assert "zz-update" not in search_ids(data, "quokka grasses", mode="bm25")
    assert search_ids(data, "wombat burrows", mode="bm25")[0] == "zz-update"

    out = sieve(data, "delete", "zz-update")
    assert "deleted 1" in out.stdout
    for mode in ("bm25", "vector"):
        assert "zz-update" not in search_ids(data, "wombat burrows", mode=mode, top_k=100)


def test_bad_input_gets_one_line_and_a_non_zero_exit(indexed, tmp_path):
    data, _ = indexed
    before = stats(data)
    cases = [
        ("search", ""),
        ("search", "x", "--mode", "fuzzy"),
        ("delete",),
        ("eval", str(tmp_path / "nowhere")),
    ]
    for args in cases:
        proc = sieve(data, *args, check=False)
        assert proc.returncode != 0, args
        assert "Traceback" not in proc.stderr, args
        assert proc.stderr.strip(), args
    one_line = {
        ("delete", "no-such-id"): (1, "error: not found: no-such-id"),
        ("index", str(tmp_path / "nowhere.jsonl")): (
            2,
            f"error: no such file or folder: {tmp_path / 'nowhere.jsonl'}; nothing was indexed",
        ),
        ("search", "x", "--top-k", "lots"): (
            2,
            "error: Invalid value for '--top-k': 'lots' is not a valid integer range.",
        ),
        ("serach", "x"): (2, "error: No such command 'serach'. Did you mean 'search'?"),
    }
    for args, (code, line) in one_line.items():
        proc = sieve(data, *args, check=False)
        assert proc.returncode == code, (args, proc.stderr)
        assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1, (args, proc.stderr)
        assert proc.stderr.startswith(line), (args, proc.stderr)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "ok-doc", "text": "fine words here"}\n{broken\n', encoding="utf-8")
    proc = sieve(data, "index", str(bad), check=False)
    assert proc.returncode == 1 and f"{bad}:2" in proc.stderr and "Traceback" not in proc.stderr
    after = stats(data)
    assert after["documents"] == before["documents"] + 1
    assert "ok-doc" in search_ids(data, "fine words", mode="bm25")
