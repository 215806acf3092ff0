"""A real, throwaway ``redis-server`` for integration tests.

It runs on a free port of 127.0.0.1 in its own temporary directory, with no
persistence, so it never touches a system Redis (which may be on 6379) or disk
state of another run. Tests that stop it must start it again: the fixture is
shared by the whole session.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_MISSING = (
    "redis-server is not on PATH. The integration tests run a real Redis; "
    "`make test` installs it (apt-get install redis-server) where it is missing."
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int, timeout_s: float = 0.5) -> bool:
    """True when a Redis answers PING on the port (raw RESP: no client library needed)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process; ``stop()`` and ``start()`` keep the same port."""

    def __init__(
        self,
        *,
        maxmemory: str | None = None,
        maxmemory_policy: str = "allkeys-lru",
        executable: str = "redis-server",
        port: int | None = None,
    ) -> None:
        path = shutil.which(executable)
        if path is None:
            raise RuntimeError(_MISSING)
        self.executable = path
        self.maxmemory = maxmemory
        self.maxmemory_policy = maxmemory_policy
        self.port = port if port is not None else _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sieve-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the process is alive (it may still be starting)."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server (no-op if running) and wait until it answers PING."""
        if self.running:
            return
        args = [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--logfile", str(self.dir / "redis.log"),
            "--daemonize", "no",
        ]
        if self.maxmemory is not None:
            args += ["--maxmemory", self.maxmemory, "--maxmemory-policy", self.maxmemory_policy]
        # Errors before the log file opens (a bad option) go to stderr: keep them too.
        with open(self.dir / "stderr.log", "ab") as stderr:
            self._process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )
        deadline = time.monotonic() + timeout_s
        while not _ping(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not start:\n{self._log()}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server (as a crash would) and wait for it to exit."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait(timeout=10)

    def cleanup(self) -> None:
        """Stop and remove the temporary directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _log(self) -> str:
        logs = [self.dir / "stderr.log", self.dir / "redis.log"]
        text = "".join(log.read_text(errors="replace") for log in logs if log.exists())
        return text[-2000:] or "(no output)"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A started ``RedisServer`` for the session; tests isolate by key names, not FLUSHALL."""
    if shutil.which("redis-server") is None:
        pytest.fail(_MISSING, pytrace=False)
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
