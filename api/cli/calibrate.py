"""``sieve calibrate``: fit the reranker's logit -> P(relevant) map on judged queries."""

from __future__ import annotations

import json
from pathlib import Path

import click

from api.cli.context import Context, progress
from search.request import MAX_TOP_K


@click.command("calibrate")
@click.argument("dataset_dir", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(["dev", "train"]), default="dev", show_default=True)
@click.option(
    "--method",
    type=click.Choice(["platt", "isotonic", "auto"]),
    default="auto",
    show_default=True,
    help="auto: the one with the lower log-loss on held-out queries.",
)
@click.option(
    "--depth",
    type=click.IntRange(1, MAX_TOP_K),
    default=50,
    show_default=True,
    help="Reranked hits per query that become (logit, relevant?) pairs.",
)
@click.option("--limit", type=click.IntRange(1), default=None, help="Use the first N queries.")
@click.option("--json", "as_json", is_flag=True, help="End with the calibration as JSON.")
@click.pass_obj
def calibrate_cmd(
    ctx: Context,
    dataset_dir: Path,
    split: str,
    method: str,
    depth: int,
    limit: int | None,
    as_json: bool,
) -> None:
    """Calibrate the reranker on a BEIR-format data set's judged queries.

    Each of the top DEPTH reranked hits of a judged query is a pair: relevant
    when its qrels grade is above 0, not relevant otherwise (unjudged documents
    included). The calibration is written beside the model as
    sieve-calibration.json; hits then carry a calibrated `relevance` and
    requests may set `min_relevance`. Restart the server to load it.
    """
    from api.factory import remote_reranker
    from search.blend_choice import explain
    from search.calibrate import calibrate_dataset
    from search.engine import build_reranker

    remote = remote_reranker(ctx.config, None)  # with SIEVE_RERANK_BACKEND=celery
    with progress(None, "indexing") as index_bar, progress(None, "queries") as query_bar:
        report = calibrate_dataset(
            ctx.settings,
            dataset_dir,
            split=split,
            method=method,
            depth=depth,
            limit=limit,
            reranker=build_reranker(ctx.settings, remote) if remote is not None else None,
            on_index_progress=index_bar.update,
            on_query_progress=query_bar.update,
        )
    fitted = report.calibration.fitted_on
    assert fitted is not None, "calibrate_dataset records what it fitted on"
    click.echo(
        f"{report.calibration.method} calibration of {report.model.name} "
        f"(fingerprint {report.model.fingerprint}) on {fitted.dataset}/{fitted.split}: "
        f"{fitted.pairs} pairs, {fitted.positives} relevant, {fitted.queries} queries"
    )
    for name, loss in fitted.validation_log_loss.items():
        click.echo(f"  held-out log-loss {name}: {loss:.4f}")
    click.echo(f"  ECE before (sigmoid) {fitted.ece_before:.4f}  after {fitted.ece_after:.4f}")
    click.echo(f"  written to {report.path}")
    if report.blend is not None:
        grid, weight = report.blend["ndcg@10"], report.blend["weight"]
        click.echo(
            f"blend {explain(report.blend)} on {report.blend['queries']} queries (nDCG@10 "
            f"{grid[f'{weight:g}']:.4f}, pure rerank {grid['0']:.4f}), stored with collection "
            f"{report.collection!r} (used for its searches after a restart)"
        )
    if as_json:
        click.echo(json.dumps(report.calibration.to_json()))
