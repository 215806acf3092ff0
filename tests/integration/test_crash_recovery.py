"""Accepted indexing work survives the API being killed: real `sieve serve` processes.

Each test starts `sieve serve` (gunicorn) on the embedded defaults, posts a batch
(202), kills the whole server mid-job (SIGKILL of its process group, as an OOM
kill or a power cut would; or SIGTERM, as a deploy would), starts it again on the
same data directory, and checks that the task id still answers, the task
finishes, and both indexes hold every accepted document exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from search.config import Settings
from search.engine import SearchEngine

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCS = 160


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve:
    """`python -m api serve` in its own process group, on one data directory."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "SIEVE_DATA_DIR": str(data_dir),
            "SIEVE_RERANK_BACKEND": "none",
            "SIEVE_RATE_LIMIT": "",
        }
        env.pop("SIEVE_API_KEYS", None)
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api", "serve", "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,  # its own group: a kill reaches gunicorn's workers too
        )
        deadline = time.monotonic() + 90
        while True:
            try:
                self.call("GET", "/healthz")
                return
            except OSError:
                assert self.process.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "sieve serve did not start"
                time.sleep(0.2)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def kill(self, sig: signal.Signals) -> None:
        os.killpg(self.process.pid, sig)
        self.process.wait(timeout=60)
        self._log.close()


def task(server: Serve, task_id: str) -> dict[str, Any]:
    status, body = server.call("GET", f"/v1/tasks/{task_id}")
    assert status == 200, body
    return body


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_an_api_killed_mid_job_loses_and_duplicates_nothing(tmp_path, sig):
    log = tmp_path / "serve.log"
    server = Serve(tmp_path / "data", log)
    try:
        assert server.call("POST", "/v1/collections", {"name": "crash"})[0] == 201
        docs = [
            {
                "id": f"doc-{i:03d}",
                "text": f"Note {i}: descale the kettle with vinegar, rinse twice.",
            }
            for i in range(DOCS)
        ]
        status, body = server.call("POST", "/v1/collections/crash/documents", {"documents": docs})
        assert status == 202, body
        task_id = body["task_id"]
        deadline = time.monotonic() + 120
        while task(server, task_id)["processed"] < 16:  # some batches in, most to go
            assert time.monotonic() < deadline, task(server, task_id)
            time.sleep(0.05)
    finally:
        server.kill(sig)

    server = Serve(tmp_path / "data", log)
    try:
        seen = task(server, task_id)  # the id answers after the restart
        assert seen["total"] == DOCS and seen["state"] in ("queued", "running", "done")
        deadline = time.monotonic() + 180
        while seen["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, seen
            time.sleep(0.1)
            seen = task(server, task_id)
        assert seen["state"] == "done" and seen["processed"] == DOCS, seen
        assert seen["indexed"] == DOCS and seen["failed"] == {}
    finally:
        server.kill(signal.SIGTERM)

    engine = SearchEngine(Settings(data_dir=tmp_path / "data"), reranker=None)
    try:
        col = engine.collection("crash")
        ids = {d["id"] for d in docs}
        stats = engine.registry.stats("crash")
        assert stats["documents"] == DOCS, stats
        assert col.keyword.doc_versions() == dict.fromkeys(ids, 1)
        assert col.vector.doc_versions() == dict.fromkeys(ids, 1)
        # Exactly once: as many chunks in each index as the registry recorded.
        assert col.keyword.count() == col.vector.count() == stats["chunks"]
    finally:
        engine.close()
