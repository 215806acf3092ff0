"""The real Sieve app on a localhost port, for tests that drive it over HTTP.

``sieve_serve`` runs the real ``sieve serve`` (gunicorn) in a subprocess, as a
user does, and polls it with a deadline. ``live_server`` is the in-process app
for the browser tests, one server per session: werkzeug's ``make_server`` in a
daemon thread (threaded, so the page's parallel requests and the indexing
thread do not wait on each other), over a ``SearchEngine`` on a temporary data
directory with the sample corpus indexed in ``default`` and the tiny
cross-encoder behind the pair-score cache, so that searches are reranked and
the compare view has two orders.
Tests that write use their own collection names or distinctive document ids.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from support.cli import ROOT

if TYPE_CHECKING:
    from flask import Flask

    from search.engine import SearchEngine

SAMPLE_CORPUS = Path(__file__).resolve().parents[2] / "sample" / "corpus.jsonl"


@dataclass(frozen=True)
class LiveServer:
    """Where the app listens, and the engine behind it (for checks from the test side)."""

    url: str
    engine: SearchEngine


@pytest.fixture(scope="session")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_reranker_dir: Path
) -> Iterator[LiveServer]:
    """The app on ``http://127.0.0.1:<free port>`` with the sample corpus, reranked."""
    # Imported here: conftest loads this module for every run, and most need no app.
    from api.app import create_app
    from api.settings import ApiSettings, ServiceSettings
    from api.state import EXTENSION
    from search.config import Settings
    from search.engine import SearchEngine
    from search.ingest import iter_paths
    from search.rerank import CachingReranker, CrossEncoderReranker
    from search.scores import LruScoreStore
    from search.types import Document

    settings = Settings.from_env({}).with_overrides(data_dir=tmp_path_factory.mktemp("live-server"))
    inner = CrossEncoderReranker(str(tiny_reranker_dir), models_dir=tiny_reranker_dir.parent)
    engine = SearchEngine(settings, reranker=CachingReranker(inner, LruScoreStore(10_000), 60))
    docs = [d for d in iter_paths([SAMPLE_CORPUS]) if isinstance(d, Document)]
    report = engine.index(docs)
    assert report.indexed == len(docs) and not report.failed, report

    app = create_app(ServiceSettings(engine=settings, api=ApiSettings(rate_limit="")), engine)
    try:
        with serve(app) as url:
            yield LiveServer(url, engine)
    finally:
        app.extensions[EXTENSION].jobs.close()
        engine.close()


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    """Serve ``app`` on a free localhost port in a daemon thread; yields its base URL."""
    from werkzeug.serving import make_server

    # Port 0: the OS picks a free port, so parallel runs never collide.
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def free_port() -> int:
    """A localhost port free now (the OS's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServeProcess:
    """A running ``sieve serve``; ``output`` is its stdout and stderr once it has stopped."""

    url: str
    proc: subprocess.Popen[str]
    output: str = field(default="")

    def get(self, path: str, timeout_s: float = 5.0) -> tuple[int, Any] | None:
        """``GET path``: (status, parsed JSON body), or None while nothing answers."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout_s) as reply:
                return reply.status, json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as reply:  # a 4xx/5xx is an answer too
            return reply.code, json.loads(reply.read() or b"null")
        except OSError:
            return None

    def post(self, path: str, body: dict[str, Any], timeout_s: float = 60.0) -> tuple[int, Any]:
        """``POST path`` with a JSON body: (status, parsed JSON body)."""
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as reply:
            return reply.code, json.loads(reply.read() or b"null")

    def wait_for(self, path: str = "/healthz", deadline_s: float = 60.0) -> tuple[int, Any]:
        """Poll ``path`` until the server answers it at all; fails if the process exits first."""
        deadline = time.monotonic() + deadline_s
        while True:
            answer = self.get(path, timeout_s=2)
            if answer is not None:
                return answer
            assert self.proc.poll() is None, self.proc.communicate()[0]
            assert time.monotonic() < deadline, f"sieve serve did not answer {path}"
            time.sleep(0.05)  # a poll interval, not synchronisation: the deadline bounds it


@contextmanager
def sieve_serve(env: dict[str, str], *args: str) -> Iterator[ServeProcess]:
    """``sieve serve --port <free> ARGS`` with ``env`` over this environment (no API keys).

    Stopped (SIGTERM) on exit, after which ``output`` holds what it printed.
    """
    port = free_port()
    full = {**os.environ, **env}
    full.pop("SIEVE_API_KEYS", None)
    command = [sys.executable, "-m", "api", "serve", "--port", str(port), *args]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    served = ServeProcess(f"http://127.0.0.1:{port}", proc)
    try:
        yield served
    finally:
        proc.terminate()
        served.output = proc.communicate(timeout=30)[0]
