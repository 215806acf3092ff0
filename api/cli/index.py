"""Indexing commands: ``sieve index``, ``sieve delete``, ``sieve stats``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from api.cli.context import EXIT_NOT_FOUND, Context, fail, progress, via_server
from search.errors import LoadError
from search.fusion_tuning import explain as explain_tuning
from search.ingest import SUPPORTED
from search.types import Document

if TYPE_CHECKING:
    from search.indexing import IndexReport


def load_documents(paths: tuple[str, ...], errors: list[LoadError]) -> Iterator[Document]:
    """Documents from paths; load errors are collected, not raised."""
    from search.ingest import iter_paths

    for item in iter_paths(paths):
        if isinstance(item, LoadError):
            errors.append(item)
            click.echo(f"skipped: {item}", err=True)
        else:
            yield item


def index_paths(ctx: Context, paths: tuple[str, ...]) -> tuple[IndexReport, list[LoadError]]:
    """Index files with a progress bar; returns the report and the load errors."""
    errors: list[LoadError] = []
    with progress(None, "indexing") as bar:
        report = ctx.engine.index(load_documents(paths, errors), on_progress=bar.update)
    return report, errors


@click.command("index", help=f"Index files or folders ({SUPPORTED}; a BEIR corpus.jsonl too).")
@click.argument("paths", nargs=-1, required=True)
@click.pass_obj
def index_cmd(ctx: Context, paths: tuple[str, ...]) -> None:
    """Index files or folders (the types are ``search.ingest.SUFFIXES``)."""
    missing = [p for p in paths if not Path(p).exists()]
    if missing:  # a typo is not a skipped line: nothing is indexed
        fail(f"no such file or folder: {', '.join(missing)}; nothing was indexed")
    report, errors = index_paths(ctx, paths)
    click.echo(
        f"indexed {report.indexed}, unchanged {report.unchanged}, failed {len(report.failed)}, "
        f"skipped lines {len(errors)}, chunks {report.chunks} in {report.seconds:.1f}s"
    )
    for doc_id, error in sorted(report.failed.items()):
        click.echo(f"failed: {doc_id}: {error}", err=True)
    if report.failed or errors:
        sys.exit(1)


@click.command("delete")
@click.argument("ids", nargs=-1)
@click.pass_obj
def delete_cmd(ctx: Context, ids: tuple[str, ...]) -> None:
    """Delete documents by id from the registry and both indexes."""
    if not ids or not all(i.strip() for i in ids):
        fail("give one or more non-empty document ids; nothing was deleted")
    known = ctx.engine.delete(list(ids))
    missing = sorted(set(ids) - set(known))
    if known:
        click.echo(f"deleted {len(known)} document(s)")
    if missing:  # as the API's 404: an id that is not there is an error
        fail(f"not found: {', '.join(missing)}", EXIT_NOT_FOUND)


@click.command("stats")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def stats_cmd(ctx: Context, as_json: bool) -> None:
    """Document and chunk counts of the collection."""
    server = ctx.server
    if server is None:
        stats = ctx.engine.stats()
    else:  # the server owns the data directory: its counts are the same
        stats = via_server(ctx, server, lambda client: client.stats(ctx.settings.collection))
    if as_json:
        click.echo(json.dumps(stats))
    else:
        for key, value in stats.items():
            if key == "fusion_tuning" and isinstance(value, dict):
                value = explain_tuning(value)
            click.echo(f"{key:>16}: {value}")
