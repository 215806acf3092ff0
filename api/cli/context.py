"""What every ``sieve`` command shares: the settings, a lazy engine, and output helpers.

The command modules import this one and nothing of each other's, except
``api.cli.search`` importing ``api.cli.index``; ``api.cli`` imports them all.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from api.server_file import RunningServer, find_server
from api.settings import ApiSettings, ServiceSettings, parse_api_keys
from search.config import Settings
from workers.settings import WorkerSettings

if TYPE_CHECKING:
    from celery import Celery

    from api.client import SieveClient
    from search.engine import SearchEngine
    from search.types import SearchResult

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample"
EXIT_USAGE = 2
EXIT_NOT_FOUND = 1  # some of what was named is not there (as an API 404)
SERVER_TIMEOUT_S = 120.0  # as `sieve serve`'s worker timeout: a cold worker loads models
EXIT_API_ERROR = 1  # the server answered the request with an error
EXIT_IN_USE = 3  # the data directory is owned by a running server


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one line to stderr and exit."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def stage_notes(result: SearchResult | Mapping[str, Any]) -> list[str]:
    """One line per degraded or skipped stage, each with its reason.

    ``result`` is a ``SearchResult`` or its JSON view (``result_json``, an API answer).
    """
    if isinstance(result, Mapping):
        degraded, reasons = result["degraded"], result.get("degraded_reasons") or {}
        skipped = result["skipped"]
    else:
        degraded, reasons, skipped = result.degraded, result.degraded_reasons, result.skipped
    notes = [f"degraded {stage}: {reasons.get(stage, 'no reason given')}" for stage in degraded]
    return notes + [f"skipped {leg}: {why}" for leg, why in skipped.items()]


def uses_embedded_index(settings: Settings) -> list[str]:
    """The embedded indexes configured (tantivy, Qdrant Edge): one process owns each folder."""
    return [
        name
        for name, on in (
            ("tantivy", settings.keyword_backend == "tantivy"),
            ("Qdrant Edge", settings.vector_backend == "qdrant-edge"),
        )
        if on
    ]


def progress(total: int | None, desc: str) -> Any:
    """A tqdm bar on stderr, silent when stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="doc", file=sys.stderr, disable=None, leave=False)


def cuda_here(settings: Settings, *, in_child: bool = False) -> bool:
    """Whether the reranker's device is CUDA: its setting, or for ``auto`` what torch sees.

    ``in_child`` asks torch in a child process, for a process that forks workers
    afterwards (CUDA set up before a fork is unusable after it).
    """
    device = settings.rerank_device
    if device != "auto":
        return device.startswith("cuda")
    if not in_child:
        from search.rerank.status import cuda_present

        return cuda_present()
    import subprocess

    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)"
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def pull_model(
    settings: Settings, repo_id: str, *, endpoint: str | None, revision: str | None = None
) -> Path:
    """``search.model_folders.pull`` into the models folder, with a progress bar on stderr."""
    from tqdm import tqdm

    from search.model_folders import pull

    class Bar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.update(file=sys.stderr, disable=None)
            super().__init__(*args, **kwargs)

    return pull(
        repo_id, settings.rerank_models_dir, endpoint=endpoint, revision=revision, tqdm_class=Bar
    )


def via_server(
    ctx: Context, server: RunningServer, call: Callable[[SieveClient], dict[str, Any]]
) -> dict[str, Any]:
    """``call`` against the server that owns the data directory; its errors as one line."""
    from api.client import SieveAPIError, SieveConnectionError

    with ctx.server_client(server) as client:
        try:
            return call(client)
        except SieveConnectionError as exc:
            fail(f"`sieve serve` at {server.url} (pid {server.pid}) did not answer: {exc.message}")
        except SieveAPIError as exc:
            fail(f"`sieve serve` at {server.url} answered {exc}", EXIT_API_ERROR)


class Context:
    """Every layer's settings (read once, in ``main``), a lazy engine and Celery app."""

    def __init__(self, config: ServiceSettings) -> None:
        self.config = config
        self._engine: SearchEngine | None = None
        self._celery: Celery | None = None
        self._server: RunningServer | None = None
        self._server_looked = False

    @property
    def settings(self) -> Settings:
        """The engine's settings."""
        return self.config.engine

    @property
    def api(self) -> ApiSettings:
        """The HTTP API's settings (``sieve serve``)."""
        return self.config.api

    @property
    def workers(self) -> WorkerSettings:
        """The Celery layer's settings (``sieve worker``, ``sieve beat``)."""
        return self.config.workers

    @property
    def celery(self) -> Celery:
        """The process's one Celery app, built on first use (needs ``SIEVE_BROKER_URL``)."""
        if self._celery is None:
            from api.factory import celery_app

            self._celery = celery_app(self.config)
        return self._celery

    @property
    def server(self) -> RunningServer | None:
        """The ``sieve serve`` that holds this data directory's embedded indexes, if one runs."""
        if not self._server_looked:
            if uses_embedded_index(self.settings):
                self._server = find_server(self.settings.data_dir)
            self._server_looked = True
        return self._server

    def server_client(self, server: RunningServer) -> SieveClient:
        """A client of ``server``, with a key from SIEVE_API_KEYS when it has keys."""
        from api.client import SieveClient

        keys = {role: key for key, role, _scope in reversed(parse_api_keys(self.api.api_keys))}
        # A worker that has just started may still be loading its models.
        return SieveClient(server.url, keys.get("admin") or keys.get("search"), SERVER_TIMEOUT_S)

    def held_by(self, server: RunningServer) -> str:
        """The one line that says a server owns the data directory, and what to do instead."""
        return (
            f"{self.settings.data_dir} is in use by `sieve serve` at {server.url} (pid "
            f"{server.pid}): stop that server, or use another data directory "
            f"(--data-dir or SIEVE_DATA_DIR); `sieve search` and `sieve stats` go through it"
        )

    @property
    def engine(self) -> SearchEngine:
        """The engine, built on first use (importing it pulls in torch).

        Refused in one line when a ``sieve serve`` owns the data directory's embedded
        indexes: opening them here would fail on their locks or, worse, answer from
        one leg only.
        """
        if self._engine is None:
            from api.factory import make_engine, uses_celery

            server = self.server
            if server is not None:
                fail(self.held_by(server), EXIT_IN_USE)

            self._engine = make_engine(
                self.config, self.celery if uses_celery(self.config) else None
            )
        return self._engine
