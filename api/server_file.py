"""Where a running ``sieve serve`` listens, kept in the data directory it owns.

The embedded indexes (tantivy's writer, Qdrant Edge's write-ahead log) admit one
owning process per data directory. ``sieve serve`` writes ``<data_dir>/server.json``
(``{"url", "pid", "data_dir"}``) once gunicorn listens and removes it on a clean
exit, so that a ``sieve`` command on the same directory can go through the
server's API or say which server holds it. A file whose process is gone (a
killed server) is stale and ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SERVER_FILE", "RunningServer", "find_server", "remove_server_file", "write_server_file"]

SERVER_FILE = "server.json"


@dataclass(frozen=True)
class RunningServer:
    """A server that holds a data directory: its base URL and its master process."""

    url: str
    pid: int


def write_server_file(data_dir: Path, url: str, pid: int) -> Path:
    """Record that ``pid`` serves ``data_dir`` at ``url`` (atomically: no half file is read)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SERVER_FILE
    partial = path.with_name(f".{SERVER_FILE}.{pid}")
    partial.write_text(json.dumps({"url": url, "pid": pid, "data_dir": str(data_dir)}) + "\n")
    partial.replace(path)
    return path


def remove_server_file(data_dir: Path, pid: int) -> None:
    """Remove the file if ``pid`` wrote it (a newer server's file is left alone)."""
    path = data_dir / SERVER_FILE
    server = _read(path)
    if server is not None and server.pid == pid:
        path.unlink(missing_ok=True)


def find_server(data_dir: Path) -> RunningServer | None:
    """The live server recorded in ``data_dir``, or None (no file, unreadable, or stale)."""
    server = _read(data_dir / SERVER_FILE)
    if server is None or not _alive(server.pid):
        return None
    return server


def _read(path: Path) -> RunningServer | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        url, pid = data["url"], data["pid"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(url, str) or not isinstance(pid, int) or isinstance(pid, bool):
        return None
    return RunningServer(url, pid)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
