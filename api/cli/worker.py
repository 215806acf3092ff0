"""Celery commands: ``sieve worker`` and ``sieve beat``, on the app of ``workers.app``."""

from __future__ import annotations

import click

from api.cli.context import Context


@click.command("worker")
@click.option("--queues", default="rerank", show_default=True, help="Comma-separated queues.")
@click.option(
    "--concurrency",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Worker processes: one per GPU for the rerank queue.",
)
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_obj
def worker_cmd(ctx: Context, queues: str, concurrency: int, loglevel: str) -> None:
    """Start a Celery worker (GPU workers: one per GPU, CUDA_VISIBLE_DEVICES set)."""
    if not ctx.workers.broker_url:
        raise click.UsageError("set SIEVE_BROKER_URL (e.g. redis://localhost:6379/0) first")
    ctx.celery.worker_main(
        [
            "worker",
            f"--queues={queues}",
            f"--concurrency={concurrency}",
            f"--loglevel={loglevel}",
            "--prefetch-multiplier=1",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@click.command("beat")
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_obj
def beat_cmd(ctx: Context, loglevel: str) -> None:
    """Start Celery beat: the periodic reconcile (run exactly one per deployment)."""
    if not ctx.workers.broker_url:
        raise click.UsageError("set SIEVE_BROKER_URL (e.g. redis://localhost:6379/0) first")
    ctx.celery.start(["beat", f"--loglevel={loglevel}"])
