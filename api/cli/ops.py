"""Operations commands: ``sieve reconcile``, ``sieve recover-registry``, ``sieve reindex``."""

from __future__ import annotations

import json
import sys

import click

from api.cli.context import Context, progress


@click.command("reconcile")
@click.option(
    "--collection",
    "collections",
    multiple=True,
    help="Only this collection (repeatable). Default: every collection.",
)
@click.option("--dry-run", is_flag=True, help="Report differences (and what would be deleted).")
@click.option(
    "--force",
    is_flag=True,
    help="Delete even more than SIEVE_RECONCILE_MAX_DELETE_SHARE of an index.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def reconcile_cmd(
    ctx: Context, collections: tuple[str, ...], dry_run: bool, force: bool, as_json: bool
) -> None:
    """Compare the registry with both indexes and repair any difference."""
    from search.reconcile import reconcile_all

    reports = reconcile_all(
        ctx.engine, list(collections) or None, repair=not dry_run, force=force
    )
    for report in reports:
        if as_json:
            click.echo(json.dumps(report.to_dict()))
        else:
            for line in report.lines():
                click.echo(line)
        for doc_id, error in sorted(report.failed.items()):
            click.echo(f"failed: {report.collection}/{doc_id}: {error}", err=True)
    if any(r.failed or r.refused for r in reports):
        sys.exit(1)


@click.command("recover-registry")
@click.option(
    "--collection",
    "collections",
    multiple=True,
    help="Read this collection (repeatable). Default: every collection folder found.",
)
@click.option("--replace", is_flag=True, help="Set aside a registry that holds other documents.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def recover_registry_cmd(
    ctx: Context, collections: tuple[str, ...], replace: bool, as_json: bool
) -> None:
    """Rebuild a lost or corrupt registry from the chunks both indexes store."""
    from search.recover import recover_registry

    report = recover_registry(ctx.engine, list(collections) or None, replace=replace)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        for line in report.lines():
            click.echo(line)


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
