"""The `sieve` command line: index, search, eval, calibrate, tune, finetune, models, rerank, serve.

A thin adapter over ``search.engine.SearchEngine``. Every engine error becomes
one line on stderr and a non-zero exit, never a traceback. Progress bars go to
stderr and only appear on a terminal.

``main`` reads every layer's settings once (``ServiceSettings.from_env``) into the
``api.cli.context.Context`` each command receives. The commands live in modules
by role (``index``, ``search``, ``ops``, ``rerank``, ``calibrate``, ``finetune``, ``models``,
``worker``, ``serve``), which import ``api.cli.context`` and never this package:
only this module imports them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from api.cli import calibrate, finetune, index, models, ops, rerank, search, serve, tune, worker
from api.cli.context import EXIT_IN_USE, Context, fail
from api.settings import ServiceSettings
from search.errors import IndexLocked, SieveError

__all__ = ["main"]


class SieveGroup(click.Group):
    """Turns ``SieveError`` and click's own errors into one ``error: ...`` line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IndexLocked as exc:
            obj = ctx.obj
            server = obj.server if isinstance(obj, Context) else None
            if server is not None:
                fail(obj.held_by(server), EXIT_IN_USE)
            fail(
                f"{exc}: another program owns this data directory (a `sieve serve`, "
                f"`sieve index` or `sieve worker`); stop it, or use another data directory "
                f"(--data-dir or SIEVE_DATA_DIR)",
                EXIT_IN_USE,
            )
        except SieveError as exc:
            fail(str(exc))

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """click's ``main``, with its usage errors (three lines, ``Error:``) as one line."""
        parent = super().main
        if not standalone_mode:
            return parent(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = parent(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "sieve"
            fail(f"{exc.format_message()} (see '{where} --help')", exc.exit_code)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            fail("aborted", 1)
        # Without standalone mode click returns --help's exit code instead of exiting.
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=SieveGroup)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Overrides SIEVE_DATA_DIR.")
@click.option("--collection", help="Overrides SIEVE_COLLECTION.")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None, collection: str | None, verbose: bool) -> None:
    """Sieve: hybrid search (BM25 + vectors + fusion) over your documents."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        config = ServiceSettings.from_env()
        overrides: dict[str, Any] = {}
        if data_dir is not None:
            overrides["data_dir"] = data_dir
        if collection is not None:
            overrides["collection"] = collection
        config = config.with_overrides(**overrides)
    except SieveError as exc:
        fail(str(exc))
    ctx.obj = Context(config)


COMMANDS = (
    index.index_cmd,
    index.delete_cmd,
    index.stats_cmd,
    search.search_cmd,
    search.eval_cmd,
    search.demo_cmd,
    ops.reconcile_cmd,
    ops.recover_registry_cmd,
    ops.reindex_cmd,
    ops.init_cmd,
    rerank.rerank_cmd,
    rerank.compare_cmd,
    calibrate.calibrate_cmd,
    tune.tune_cmd,
    finetune.finetune_cmd,
    models.models_cmd,
    worker.worker_cmd,
    worker.beat_cmd,
    serve.serve_cmd,
)
for _command in COMMANDS:
    main.add_command(_command)
