"""A real ``celery worker`` process for integration tests.

The ``celery_worker`` fixture is a factory: ``celery_worker(db=7, env={...})`` starts
``python -m celery -A workers.app worker`` (prefork pool, like production) on
the session's ``redis_server``, waits until it is ready, and stops it (SIGTERM,
then SIGKILL) when the test module ends. Each worker gets its own queue name and
the caller picks the Redis database, so test modules never see each other's
messages, counters or dead letters.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from search.config import Settings
from workers.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
READY = re.compile(r"@\S+ ready\.")  # "<queue>@<host> ready."


def broker_url(redis_url: str, db: int) -> str:
    """``redis_url`` pointed at database ``db`` (one per test module)."""
    return f"{redis_url.rsplit('/', 1)[0]}/{db}"


@dataclass
class CeleryWorker:
    """One running worker: its process, its environment and its log."""

    process: subprocess.Popen[bytes]
    queue: str  # the queue it consumes
    hostname: str  # its node name, for app.control(destination=[...])
    env: dict[str, str]
    log_path: Path
    settings: Settings = field(init=False)
    workers: WorkerSettings = field(init=False)

    def __post_init__(self) -> None:
        # What a client needs to reach this worker: same broker, same queue.
        self.settings = Settings.from_env(self.env)
        self.workers = WorkerSettings.from_env(self.env)

    @property
    def alive(self) -> bool:
        """Whether the main worker process is running."""
        return self.process.poll() is None

    def log(self) -> str:
        """Everything the worker wrote so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str | re.Pattern[str], timeout_s: float = 60.0,
                     count: int = 1) -> None:
        """Wait until ``pattern`` has appeared ``count`` times in the log."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout_s
        while len(regex.findall(self.log())) < count:
            if not self.alive:
                raise RuntimeError(f"worker exited ({self.process.returncode}):\n{self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{regex.pattern!r} not seen {count} times in the worker log:\n{self.tail()}"
                )
            time.sleep(0.05)

    def pool_pids(self) -> list[int]:
        """PIDs of the pool processes (the main process's children)."""
        try:
            return [child.pid for child in psutil.Process(self.process.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def wait_for_pool(self, n: int = 1, timeout_s: float = 30.0) -> list[int]:
        """Wait until ``n`` pool processes run; their PIDs."""
        deadline = time.monotonic() + timeout_s
        while len(pids := self.pool_pids()) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pids)} pool processes, wanted {n}:\n{self.tail()}")
            time.sleep(0.05)
        return pids

    def tail(self, chars: int = 4000) -> str:
        """The end of the log, for failure messages."""
        return self.log()[-chars:]

    def stop(self, timeout_s: float = 10.0) -> None:
        """Warm shutdown (SIGTERM); SIGKILL the process group if it does not exit in time."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        try:  # its own process group: also sweeps a pool process left behind
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=timeout_s)


def start_worker(
    broker: str,
    log_path: Path,
    *,
    app: str = "workers.app",
    queue: str | None = None,
    concurrency: int = 1,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
) -> CeleryWorker:
    """Start a worker consuming ``queue`` (default: a fresh unique name) and wait until ready."""
    queue = queue or f"rerank-{uuid.uuid4().hex[:8]}"
    hostname = f"{queue}@{socket.gethostname()}"
    # The developer's own SIEVE_* variables must not leak into the worker.
    full = {k: v for k, v in os.environ.items() if not k.startswith("SIEVE_")}
    full.update(
        {
            "SIEVE_BROKER_URL": broker,
            "SIEVE_RERANK_QUEUE": queue,
            "SIEVE_RERANK_DEVICE": "cpu",
            # One torch thread: the pool process shares a small box with the test
            # process, and idle OpenMP threads spinning on every core made each
            # round trip 3x slower (measured on the 2-core CI machine).
            "OMP_NUM_THREADS": "1",
            # tests/ on the path: test-only apps (support.crash_app) live there.
            "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]),
            "PYTHONUNBUFFERED": "1",
        }
    )
    full.update(env or {})
    command = [
        sys.executable, "-m", "celery", "-A", app, "worker",
        "--queues", queue,
        "--concurrency", str(concurrency),
        "--pool", "prefork",
        "--loglevel", "INFO",
        "--hostname", hostname,
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=full, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    worker = CeleryWorker(process, queue, hostname, full, log_path)
    try:
        worker.wait_for_log(READY, timeout_s)
        worker.wait_for_pool(concurrency, timeout_s)
    except BaseException:
        worker.stop()
        raise
    return worker


@pytest.fixture(scope="module")
def celery_worker(redis_server, tmp_path_factory) -> Iterator[object]:
    """Factory ``celery_worker(db=..., **start_worker_options) -> CeleryWorker``.

    Workers started through it are stopped when the test module ends.
    """
    started: list[CeleryWorker] = []

    def start(*, db: int, **options: Any) -> CeleryWorker:
        log_path = tmp_path_factory.mktemp("celery") / "worker.log"
        worker = start_worker(broker_url(redis_server.url, db), log_path, **options)
        started.append(worker)
        return worker

    yield start
    for worker in started:  # all shut down at once; each takes a second or two
        if worker.alive:
            worker.process.send_signal(signal.SIGTERM)
    for worker in started:
        worker.stop()
