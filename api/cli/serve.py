"""``sieve serve``: the HTTP API under gunicorn, gthread workers.

The app (and with it every model) is built in each worker after the fork,
never in the master: torch's thread pools do not survive a fork. ``--demo``
indexes the sample corpus first, in a separate ``sieve index`` process for
the same reason, and because the embedded indexes admit one owner at a time.
With embedded indexes, the master writes where it listens into the data directory
(``api.server_file``) once gunicorn is ready, for the other ``sieve`` commands.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from gunicorn.app.base import BaseApplication

from api.cli.context import SAMPLE_DIR, Context, cuda_here, fail, pull_model, uses_embedded_index
from api.server_file import remove_server_file, write_server_file
from api.settings import ServiceSettings, parse_api_keys

log = logging.getLogger("sieve.serve")

WORKER_TIMEOUT_S = 120  # with SIEVE_WARM_UP=0 a cold first query loads the models


@dataclass(frozen=True)
class ServePlan:
    """Where and how gunicorn runs, and what to tell the operator."""

    host: str
    port: int
    workers: int
    threads: int
    notes: tuple[str, ...]


def serve_plan(config: ServiceSettings) -> ServePlan:
    """Bind address and worker count from the settings, with the reasons for any change."""
    settings, api = config.engine, config.api
    notes: list[str] = []
    host = api.host
    if not parse_api_keys(api.api_keys):
        host = "127.0.0.1"
        notes.append(
            "no SIEVE_API_KEYS: the API is open, so it is bound to 127.0.0.1 only "
            "(set SIEVE_API_KEYS to serve other hosts)"
        )
    embedded = uses_embedded_index(settings)
    workers = api.workers
    if embedded and workers > 1:
        notes.append(
            f"running 1 worker process instead of {workers}: the embedded "
            f"{' and '.join(embedded)} index lets one process own its folder; "
            f"concurrency comes from {api.threads} threads"
        )
        workers = 1
    return ServePlan(host, api.port, workers, api.threads, tuple(notes))


def check_port(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be served (one line naming the fix), or None when it can.

    Bound and released at once, as gunicorn will bind it (``SO_REUSEADDR``, so a
    port in TIME_WAIT is free): a port in use is found here, before any worker
    or model starts, not after gunicorn's five retries. Port 0 (any free port)
    always passes.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            how = "choose another with `sieve serve --port N` or SIEVE_PORT=N"
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use: {how}"
            return f"cannot listen on {host}:{port} ({exc.strerror or exc}): {how}"
    return None


class SieveApplication(BaseApplication):
    """gunicorn running ``create_app(config)`` in each worker."""

    def __init__(self, config: ServiceSettings, options: dict[str, Any]) -> None:
        self.config = config
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        """Apply ``options`` to gunicorn's configuration (those this version knows)."""
        for key, value in self.options.items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self) -> Any:
        """Build the app and start its warm-up (called in the worker, after the fork).

        The warm-up runs on a thread, not in ``post_worker_init``: the worker
        answers ``/healthz`` at once and ``/readyz`` says "warming" (503) until
        every part is loaded, where a hook would leave both unanswered, and a
        load longer than the worker timeout would get the worker killed.
        """
        from api.app import create_app
        from api.state import EXTENSION

        app = create_app(self.config)
        if self.config.api.warm_up:
            app.extensions[EXTENSION].engine.warm_up_in_background()
        return app


def local_url(host: str, port: int) -> str:
    """The URL a program on this host reaches ``host:port`` at (a wildcard bind: loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def server_file_hooks(data_dir: Path) -> dict[str, Any]:
    """gunicorn hooks that record the listening address in ``data_dir`` and clear it on exit.

    ``when_ready`` runs in the master once the sockets are bound (so port 0 is
    recorded as the port the OS gave); ``on_exit`` on a clean stop. The pid is the
    master's: it owns the data directory for as long as any worker runs.
    """
    pid = os.getpid()

    def when_ready(arbiter: Any) -> None:
        host, port = arbiter.LISTENERS[0].sock.getsockname()[:2]
        write_server_file(data_dir, local_url(host, port), pid)

    def on_exit(arbiter: Any) -> None:
        remove_server_file(data_dir, pid)

    return {"when_ready": when_ready, "on_exit": on_exit}


def _index_demo(config: ServiceSettings) -> None:
    settings = config.engine
    paths = [str(p) for p in (SAMPLE_DIR / "corpus.jsonl", SAMPLE_DIR / "docs") if p.exists()]
    command = [sys.executable, "-m", "api", "--data-dir", str(settings.data_dir)]
    command += ["--collection", settings.collection, "index", *paths]
    click.echo(f"indexing the sample corpus into {settings.data_dir} ...")
    # Exit 1 only means some sample line was skipped; the rest is indexed.
    if subprocess.run(command, check=False).returncode not in (0, 1):
        raise click.ClickException("indexing the sample corpus failed (see above)")


HUB_CHECK_S = 3.0  # how long --pull-default-reranker waits for the hub to answer at all


def pull_default_reranker(
    config: ServiceSettings, cuda: bool, endpoint: str | None = None
) -> ServiceSettings:
    """Pull this device's default reranker when the hub answers; the config to serve with.

    Prints at most one line, and never fails: a machine without network
    serves without a reranker. When the configured model is the built-in
    default and not on this machine, the pulled default is served instead
    (``SIEVE_RERANK_MODEL`` still names another model when set to one).
    """
    from huggingface_hub import constants

    from search.errors import SieveError
    from search.model_folders import hub_unreachable
    from search.models import DEFAULT_RERANKER_GPU, default_reranker
    from search.rerank import CrossEncoderReranker

    settings = config.engine
    name = default_reranker(cuda)
    wanted = CrossEncoderReranker.from_settings(settings)
    default = CrossEncoderReranker.from_settings(settings.with_overrides(rerank_model=name))
    if settings.rerank_backend in ("none", "celery") or wanted.available():
        return config  # nothing to pull here: the banner says what serves
    if not default.available():
        hub = (endpoint or constants.ENDPOINT).rstrip("/")
        why = (
            "HF_HUB_OFFLINE is set"
            if constants.HF_HUB_OFFLINE
            else hub_unreachable(hub, HUB_CHECK_S)
        )
        if why:
            click.echo(
                f"not pulling the default reranker {name}: the hub {hub} is not reachable "
                f"({why}); serving without it (`sieve models pull {name}` when online)"
            )
            return config
        try:
            folder = pull_model(settings, name, endpoint=endpoint)
        except SieveError as exc:
            click.echo(f"could not pull the default reranker {name}: {exc}; serving without it")
            return config
        click.echo(f"pulled the default reranker {name} into {folder}")
    if settings.rerank_model != DEFAULT_RERANKER_GPU:
        return config  # a model of the user's own choosing: the banner says it is missing
    return config.with_overrides(rerank_model=name)


@click.command("serve")
@click.option("--host", default=None, help="Overrides SIEVE_HOST (ignored without API keys).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Overrides SIEVE_PORT.")
@click.option("--workers", type=click.IntRange(1), default=None, help="Overrides SIEVE_WORKERS.")
@click.option("--threads", type=click.IntRange(1), default=None, help="Overrides SIEVE_THREADS.")
@click.option("--demo", is_flag=True, help="Index the sample corpus before serving.")
@click.option(
    "--pull-default-reranker",
    "pull_default",
    is_flag=True,
    help="First pull this device's default reranker if it is missing and the hub answers "
    f"within {HUB_CHECK_S:g} s (else serve without it).",
)
@click.option("--hub-endpoint", default=None, help="Hub URL (default: HF_ENDPOINT or the hub).")
@click.pass_obj
def serve_cmd(
    ctx: Context,
    host: str | None,
    port: int | None,
    workers: int | None,
    threads: int | None,
    demo: bool,
    pull_default: bool,
    hub_endpoint: str | None,
) -> None:
    """Serve the HTTP API (search, admin, metrics, /docs) with gunicorn.

    The banner's last line says which reranker will serve, or why none and the fix.
    """
    from search.rerank.status import describe_settings

    given = {"host": host, "port": port, "workers": workers, "threads": threads}
    config = ctx.config.with_overrides(**{k: v for k, v in given.items() if v is not None})
    early = serve_plan(config)  # a busy port fails before any model is pulled or loaded
    busy = check_port(early.host, early.port)
    if busy is not None:
        fail(busy)
    # Asked in a child process: this one forks the workers.
    cuda = cuda_here(config.engine, in_child=True)
    if pull_default:
        config = pull_default_reranker(config, cuda, hub_endpoint)
    if not config.api.cursor_secret:
        # Every worker must accept the cursors any other worker signed.
        config = config.with_overrides(cursor_secret=secrets.token_urlsafe(32))
    plan = serve_plan(config)
    for note in plan.notes:
        log.warning("%s", note)
    if demo:
        _index_demo(config)
    shown = "localhost" if plan.host in ("0.0.0.0", "::") else plan.host
    click.echo(f"Sieve API on http://{shown}:{plan.port}  (docs: /docs, bound to {plan.host})")
    click.echo(describe_settings(config.engine, cuda=cuda).line())
    options = {
        "bind": f"[{plan.host}]:{plan.port}" if ":" in plan.host else f"{plan.host}:{plan.port}",
        "workers": plan.workers,
        "worker_class": "gthread",
        "threads": plan.threads,
        "timeout": WORKER_TIMEOUT_S,
        "graceful_timeout": 30,
        "preload_app": False,  # models load after the fork, in each worker
        "errorlog": "-",
        "loglevel": "info",
        # gunicorn >= 25.1 opens a control socket under $HOME: one per user, so two
        # instances would fight over it, and nothing here uses it.
        "control_socket_disable": True,
    }
    if uses_embedded_index(config.engine):
        options.update(server_file_hooks(config.engine.data_dir))
    SieveApplication(config, options).run()
