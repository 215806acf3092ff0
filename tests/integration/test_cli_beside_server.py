"""The command line beside a running `sieve serve` that owns the same data directory.

A real `python -m api serve` subprocess on a temporary data directory writes
``server.json`` when it listens; `sieve search` and `sieve stats` then go through
its API, commands that would open the embedded indexes fail in one line naming
it, and after a clean stop (or with a stale file) the CLI opens the indexes itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.cli import ROOT, sieve

from api.client import SieveClient
from api.server_file import SERVER_FILE, find_server
from search.errors import IndexLocked
from search.vector.edge import QdrantEdgeIndex

pytestmark = pytest.mark.integration

DOCS = [
    {"id": "kettle", "title": "Kettle", "text": "Descale the kettle with vinegar, rinse twice."},
    {"id": "skillet", "title": "Skillet", "text": "Clean a cast iron skillet with salt and oil."},
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path, Any]]:
    """(the CLI's variables, the data directory, the server process): two documents, served."""
    tmp = tmp_path_factory.mktemp("beside")
    data_dir = tmp / "data"
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    env = {"SIEVE_DATA_DIR": str(data_dir), "SIEVE_RERANK_BACKEND": "none", "SIEVE_RATE_LIMIT": ""}
    sieve(env, "index", str(corpus))
    log = (tmp / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "api", "serve", "--port", "0"],
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "SIEVE_API_KEYS"}, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while find_server(data_dir) is None:  # written once gunicorn listens
        assert process.poll() is None, (tmp / "serve.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "sieve serve wrote no server.json"
        time.sleep(0.2)
    with SieveClient(find_server(data_dir).url, timeout=120) as client:
        client.request("GET", "/healthz")  # the worker has loaded the app
    try:
        yield env, data_dir, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
        log.close()


def test_search_and_stats_go_through_the_server(served) -> None:
    env, data_dir, process = served
    server = find_server(data_dir)
    assert server is not None and server.url.startswith("http://127.0.0.1:")
    assert server.url != "http://127.0.0.1:0"  # the port the OS gave, not the one asked for

    stats = json.loads(sieve(env, "stats", "--json").stdout)
    assert stats["documents"] == 2 and stats["vector_chunks"] == stats["keyword_chunks"] > 0

    answer = sieve(env, "search", "cast iron skillet", "--json", "--mode", "hybrid")
    view = json.loads(answer.stdout)
    assert view["hits"][0]["doc_id"] == "skillet"
    assert view["degraded"] == [] and "qdrant-edge" not in answer.stderr  # both legs answered
    shown = sieve(env, "search", "descale kettle").stdout
    assert "kettle" in shown.splitlines()[1]


def test_commands_that_open_the_indexes_name_the_server(served, tmp_path: Path) -> None:
    env, data_dir, process = served
    server = find_server(data_dir)
    assert server is not None
    for args in (("delete", "kettle"), ("index", str(tmp_path)), ("demo",)):
        proc = sieve(env, *args, check=False)
        assert proc.returncode == 3, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, (args, proc.stderr)
        assert server.url in lines[0] and f"pid {server.pid}" in lines[0]
        assert "--data-dir" in lines[0] and "SIEVE_DATA_DIR" in lines[0]


def test_a_clean_stop_removes_the_file_and_a_stale_one_is_ignored(served) -> None:
    env, data_dir, process = served
    server = find_server(data_dir)
    assert server is not None
    assert server.pid == process.pid  # the gunicorn master is the `sieve serve` process
    process.send_signal(signal.SIGTERM)  # gunicorn's graceful stop
    assert process.wait(timeout=60) == 0
    assert not (data_dir / SERVER_FILE).exists()
    # A file left by a killed server: its pid is gone, so the CLI opens the indexes itself.
    stale = {"url": server.url, "pid": server.pid, "data_dir": str(data_dir)}
    (data_dir / SERVER_FILE).write_text(json.dumps(stale))
    assert find_server(data_dir) is None
    stats = json.loads(sieve(env, "stats", "--json").stdout)
    assert stats["documents"] == 2


def test_a_locked_shard_is_index_locked_not_a_degraded_leg(tmp_path: Path) -> None:
    owner = QdrantEdgeIndex(tmp_path / "shard", 4)
    second = QdrantEdgeIndex(tmp_path / "shard", 4)
    try:
        assert owner.count() == 0
        with pytest.raises(IndexLocked, match="write-ahead log is locked"):
            second.search(np.ones(4, dtype=np.float32), 3)
    finally:
        owner.close()
        second.close()
