"""``sieve tune``: choose a collection's fusion from judged queries, or keep the default."""

from __future__ import annotations

import json
from pathlib import Path

import click

from api.cli.context import Context, progress


@click.command("tune")
@click.argument("dataset_dir", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(["train", "dev"]), default="train", show_default=True)
@click.option("--folds", type=click.IntRange(2, 20), default=5, show_default=True)
@click.option("--limit", type=click.IntRange(1), default=None, help="Use the first N queries.")
@click.option("--json", "as_json", is_flag=True, help="End with the stored choice as JSON.")
@click.pass_obj
def tune_cmd(
    ctx: Context, dataset_dir: Path, split: str, folds: int, limit: int | None, as_json: bool
) -> None:
    """Tune hybrid fusion on a BEIR-format data set's judged queries.

    Every fusion method and bm25 share on a grid is scored by cross-validation
    (each query ranked by the fusion that won on the other folds) against the
    default. The best is adopted for the collection only when it beats the
    default on held-out queries (more wins than losses, sign test p < 0.05);
    the evidence is stored either way and shown by `sieve stats`. Restart the
    server to use it.
    """
    from search.fusion_tuning import explain, tune_dataset

    with progress(None, "indexing") as index_bar:
        _tuning, entry = tune_dataset(
            ctx.settings,
            str(dataset_dir),
            split=split,
            folds=folds,
            limit=limit,
            on_index_progress=index_bar.update,
        )
    click.echo(f"collection {ctx.settings.collection}: {explain(entry)}")
    if as_json:
        click.echo(json.dumps(entry))
