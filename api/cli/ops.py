"""Operations commands: ``sieve reconcile`` and ``sieve reindex``."""

from __future__ import annotations

import json
import sys

import click

from api.cli.context import Context, progress


@click.command("reconcile")
@click.option("--dry-run", is_flag=True, help="Report differences without repairing them.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def reconcile_cmd(ctx: Context, dry_run: bool, as_json: bool) -> None:
    """Compare the registry with both indexes and repair any difference."""
    from search.reconcile import reconcile

    indexer = ctx.engine.collection(ctx.settings.collection).indexer
    report = reconcile(indexer, repair=not dry_run)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        click.echo(f"collection {report.collection}: {report.total} difference(s)")
        for name, diff in report.differences.items():
            click.echo(
                f"  {name:>7}: missing {len(diff.missing)}, stale {len(diff.stale)}, "
                f"orphans {len(diff.orphans)}"
            )
        if report.total:
            click.echo("repaired" if report.repaired else "not repaired (dry run or failures)")
    if report.failed:
        for doc_id, error in sorted(report.failed.items()):
            click.echo(f"failed: {doc_id}: {error}", err=True)
        sys.exit(1)


@click.command("reindex")
@click.option(
    "--index",
    "target",
    type=click.Choice(["keyword", "vector", "all"]),
    default="all",
    show_default=True,
)
@click.pass_obj
def reindex_cmd(ctx: Context, target: str) -> None:
    """Rebuild an index from the registry alone."""
    from search.reconcile import rebuild

    indexer = ctx.engine.collection(ctx.settings.collection).indexer
    with progress(None, f"reindexing {target}") as bar:
        count = rebuild(indexer, target, on_progress=bar.update)
    click.echo(f"rebuilt {target} from the registry: {count} document(s)")


@click.command("init")
@click.pass_obj
def init_cmd(ctx: Context) -> None:
    """Create what the backends need (idempotent): registry tables, BM25 index, vector collection.

    The distributed deployment runs this once (the ``migrate`` service) before the API and
    workers start: it puts the Elasticsearch index template and index, creates the Qdrant
    collection with the embedder's dimension, and the registry tables in PostgreSQL.
    """
    engine = ctx.engine
    collections = engine.registry.collections()  # creates the tables on first use
    col = engine.collection(ctx.settings.collection)
    keyword, vector = col.keyword.count(), col.vector.count()
    click.echo(
        f"registry ready ({len(collections)} collection(s) with documents); "
        f"{col.keyword.name} index of {col.name!r} ready ({keyword} chunks); "
        f"{col.vector.name} collection ready ({vector} points, dim {engine.embedder.dim})"
    )
