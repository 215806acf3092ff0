"""A local stand-in for the Hugging Face hub, enough for ``snapshot_download``.

It serves the files of local folders, one per repository id, through the
endpoints huggingface_hub's own client calls (read from its source):

- ``GET /api/models/{repo}/revision/{rev}``: the model info, with ``sha`` (the
  commit) and ``siblings`` (``HfApi.model_info``, via ``repo_info``);
- ``GET /api/models/{repo}/tree/{rev}``: the file listing (``list_repo_tree``,
  one page: no ``Link`` header);
- ``HEAD`` and ``GET /{repo}/resolve/{rev}/{path}``: a file, with the
  ``X-Repo-Commit``, ``ETag`` and ``Content-Length`` headers
  ``get_hf_file_metadata`` reads.

Every request path is recorded in ``requests`` so that a test can tell what
was asked. Nothing here reaches the internet.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

COMMIT = "a" * 40


class HubServer:
    """Serves ``repos`` (repository id -> folder) on 127.0.0.1 at ``endpoint``."""

    def __init__(self, repos: dict[str, Path]) -> None:
        self.repos = {repo: Path(folder) for repo, folder in repos.items()}
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                hub.handle(self, body=True)

            def do_HEAD(self) -> None:
                hub.handle(self, body=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """The base URL to pass as ``endpoint`` / ``HF_ENDPOINT``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def files(self, repo: str) -> list[Path]:
        root = self.repos[repo]
        return sorted(p for p in root.rglob("*") if p.is_file())

    def handle(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(request.path).path)
        self.requests.append(f"{request.command} {path}")
        for repo, root in self.repos.items():
            api = f"/api/models/{repo}/"
            if path.startswith(api + "revision/"):
                siblings = [{"rfilename": p.relative_to(root).as_posix()} for p in self.files(repo)]
                info = {"id": repo, "modelId": repo, "sha": COMMIT, "siblings": siblings}
                return self._send(request, 200, json.dumps(info).encode(), body, "application/json")
            if path.startswith(api + "tree/"):
                tree = [
                    {
                        "type": "file",
                        "path": p.relative_to(root).as_posix(),
                        "size": p.stat().st_size,
                        "oid": hashlib.sha1(p.read_bytes()).hexdigest(),
                    }
                    for p in self.files(repo)
                ]
                return self._send(request, 200, json.dumps(tree).encode(), body, "application/json")
            resolve = f"/{repo}/resolve/"
            if path.startswith(resolve):
                _revision, _, name = path[len(resolve) :].partition("/")
                file = root / name
                if name and file.is_file() and root in file.resolve().parents:
                    data = file.read_bytes()
                    headers = {
                        "X-Repo-Commit": COMMIT,
                        "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                    }
                    return self._send(request, 200, data, body, "application/octet-stream", headers)
        # The hub's answer for an unknown repository or file.
        error = json.dumps({"error": "Repository not found"}).encode()
        self._send(request, 404, error, body, "application/json", {"X-Error-Code": "RepoNotFound"})

    @staticmethod
    def _send(
        request: BaseHTTPRequestHandler,
        status: int,
        data: bytes,
        body: bool,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        request.end_headers()
        if body:
            request.wfile.write(data)


@pytest.fixture
def hub_server(tiny_reranker_dir: Path) -> Iterator[HubServer]:
    """A local hub serving the tiny reranker as ``acme/tiny-reranker``."""
    server = HubServer({"acme/tiny-reranker": tiny_reranker_dir}).start()
    yield server
    server.stop()
