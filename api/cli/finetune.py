"""``sieve finetune``: train a cross-encoder on judged queries (``search.finetune``)."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from api.cli.context import Context, fail, progress
from search.finetune.train import FinetuneConfig
from search.models import BUNDLED_MODEL_ID, locate

DEFAULTS = FinetuneConfig()  # the options' defaults are the config's, in one place

EXIT_INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C


@click.command("finetune")
@click.argument("dataset_dir", type=click.Path(path_type=Path), required=False)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Model folder to write."
)
@click.option(
    "--pairs",
    type=click.Path(path_type=Path, dir_okay=False),
    help='JSONL of {"query", "positives": [ids], "negatives"?: [ids]} over --collection.',
)
@click.option("--split", default="train", show_default=True, help="Qrels split of DATASET_DIR.")
@click.option(
    "--base",
    default=BUNDLED_MODEL_ID,
    show_default=True,
    help="Start checkpoint: a reranker folder or a plain encoder (a folder or model id).",
)
@click.option("--negatives", type=click.IntRange(1), default=DEFAULTS.negatives, show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=DEFAULTS.epochs, show_default=True)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=DEFAULTS.batch_size,
    show_default=True,
    help="Groups.",
)
@click.option(
    "--lr", type=click.FloatRange(0, min_open=True), default=DEFAULTS.lr, show_default=True
)
@click.option(
    "--head-lr",
    type=click.FloatRange(0),
    default=DEFAULTS.head_lr,
    show_default=True,
    help="Learning rate of a newly initialised head (0: --lr).",
)
@click.option(
    "--warmup",
    type=click.FloatRange(0, 1, max_open=True),
    default=DEFAULTS.warmup,
    show_default=True,
)
@click.option(
    "--max-length", type=click.IntRange(32), default=DEFAULTS.max_length, show_default=True
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=DEFAULTS.val_fraction,
    show_default=True,
)
@click.option(
    "--mine-depth", type=click.IntRange(1, 100), default=DEFAULTS.mine_depth, show_default=True
)
@click.option(
    "--rerank-depth", type=click.IntRange(1, 100), default=DEFAULTS.rerank_depth, show_default=True
)
@click.option("--skip-top", type=click.IntRange(0), default=DEFAULTS.skip_top, show_default=True)
@click.option("--patience", type=click.IntRange(1), default=DEFAULTS.patience, show_default=True)
@click.option(
    "--evals-per-epoch", type=click.IntRange(1), default=DEFAULTS.evals_per_epoch, show_default=True
)
@click.option("--max-steps", type=click.IntRange(0), default=0, help="Stop after N steps (0: off).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use the first N queries.")
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
@click.option(
    "--device", default=DEFAULTS.device, show_default=True, help="auto, cpu, cuda or cuda:N."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder.")
@click.option("--json", "as_json", is_flag=True, help="End with the model card as one JSON line.")
@click.pass_obj
def finetune_cmd(
    ctx: Context,
    dataset_dir: Path | None,
    out: Path,
    pairs: Path | None,
    split: str,
    base: str,
    overwrite: bool,
    as_json: bool,
    limit: int | None,
    **options: Any,
) -> None:
    """Fine-tune a cross-encoder reranker on DATASET_DIR (BEIR) or --pairs.

    Hard negatives are mined by Sieve's own hybrid retrieval; a share of the
    queries is held out, and the saved model is the one with the best
    validation nDCG@10 of reranking the hybrid top --rerank-depth. The
    configured reranker is never changed: the last line says whether the new
    model is worth setting as SIEVE_RERANK_MODEL.
    """
    from search.blend_choice import explain
    from search.finetune import finetune
    from search.finetune.source import from_dataset, from_pairs

    if (dataset_dir is None) == (pairs is None):
        fail("give either DATASET_DIR or --pairs FILE")
    if out.exists() and any(out.iterdir()) and not overwrite:
        fail(f"{out} exists and is not empty; pass --overwrite to replace it")
    config = FinetuneConfig(**options)
    # Ctrl-C (SIGINT) is how a run is stopped with its checkpoint. A parent that
    # ignores SIGINT (nohup, a background job of a non-interactive shell) hands
    # that on to this process, and Python then installs no handler: `kill -INT`
    # would do nothing. Training listens for it whatever the parent did.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    start = locate(base, ctx.settings.rerank_models_dir, kind="start model")
    if dataset_dir is not None:
        with progress(None, "indexing") as bar:
            source = from_dataset(
                ctx.settings, dataset_dir, split=split, limit=limit, on_index_progress=bar.update
            )
    else:
        assert pairs is not None
        source = from_pairs(ctx.settings, pairs, collection=ctx.settings.collection, limit=limit)
    with source, progress(None, "mining negatives") as mine_bar:
        bar = _StepBar()
        try:
            result = finetune(
                source,
                start,
                out,
                config,
                on_step=bar.step,
                on_eval=bar.evaluation,
                on_mine_progress=mine_bar.update,
            )
        finally:
            bar.close()
    before, after = result.before, result.after
    click.echo(f"model saved to {result.out} ({result.stopped}, {result.card['steps']} steps)")
    blend = result.card.get("blend")
    if blend is not None:
        click.echo(
            f"blend {explain(blend)} on {blend['queries']} validation queries (in the card: "
            "used unless the collection or SIEVE_RERANK_BLEND_WEIGHT sets one)"
        )
    calibration = result.card.get("calibration")
    if calibration is not None:
        click.echo(
            f"calibration ({calibration['method']}) fitted on the same queries, ECE "
            f"{calibration['ece']:.4f}: hits carry `relevance` and requests may set min_relevance"
        )
    if before is not None and after is not None:
        n = result.card["data"]["validation_queries"]
        verdict = "better" if result.better else "NOT better"
        click.echo(
            f"verdict: {verdict} than no reranking on {n} validation queries "
            f"(nDCG@10 {before['ndcg@10']:.4f} hybrid -> {after['ndcg@10']:.4f} reranked); "
            f"the configured reranker is unchanged (SIEVE_RERANK_MODEL={result.out} to use it)"
        )
    else:
        click.echo("verdict: unknown, no validation query was held out (--val-fraction)")
    if as_json:
        click.echo(json.dumps(result.card))
    if result.stopped == "interrupted":
        sys.exit(EXIT_INTERRUPTED)


class _StepBar:
    """The training bar (loss, pairs/s), created on the first step; silent off a terminal."""

    def __init__(self) -> None:
        self._bar: Any = None

    def step(self, step: Any) -> None:
        if self._bar is None:
            self._bar = progress(step.total, "training")
            self._bar.unit = "step"
        self._bar.set_postfix(loss=f"{step.loss:.4f}", pairs_s=f"{step.pairs_per_s:.0f}")
        self._bar.update(1)

    def evaluation(self, evaluation: Any) -> None:
        mark = "best" if evaluation.improved else "no gain"
        line = f"step {evaluation.step}: validation nDCG@10 {evaluation.metrics['ndcg@10']:.4f}"
        (self._bar.write if self._bar is not None else click.echo)(
            f"{line} ({mark})", file=sys.stderr
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
