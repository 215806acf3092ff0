"""What every ``sieve`` command shares: the settings, a lazy engine, and output helpers.

The command modules import this one and nothing of each other's, except
``api.cli.search`` importing ``api.cli.index``; ``api.cli`` imports them all.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from api.settings import ApiSettings, ServiceSettings
from search.config import Settings
from workers.settings import WorkerSettings

if TYPE_CHECKING:
    from celery import Celery

    from search.engine import SearchEngine
    from search.types import SearchResult

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample"
EXIT_USAGE = 2
EXIT_NOT_FOUND = 1  # some of what was named is not there (as an API 404)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one line to stderr and exit."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def stage_notes(result: SearchResult) -> list[str]:
    """One line per degraded or skipped stage, each with its reason."""
    notes = [
        f"degraded {stage}: {result.degraded_reasons.get(stage, 'no reason given')}"
        for stage in result.degraded
    ]
    return notes + [f"skipped {leg}: {why}" for leg, why in result.skipped.items()]


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


class Context:
    """Every layer's settings (read once, in ``main``), a lazy engine and Celery app."""

    def __init__(self, config: ServiceSettings) -> None:
        self.config = config
        self._engine: SearchEngine | None = None
        self._celery: Celery | None = None

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
    def engine(self) -> SearchEngine:
        """The engine, built on first use (importing it pulls in torch)."""
        if self._engine is None:
            from api.factory import make_engine, uses_celery

            self._engine = make_engine(
                self.config, self.celery if uses_celery(self.config) else None
            )
        return self._engine
