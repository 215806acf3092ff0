"""Search commands: ``sieve search``, ``sieve eval``, ``sieve demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from api.cli.context import SAMPLE_DIR, Context, fail, progress, stage_notes, via_server
from api.cli.index import index_paths
from search.eval_notes import describe
from search.request import FUSION_METHODS, MAX_RERANK_DEPTH, MAX_TOP_K
from search.rerank import Reranker
from search.rerank.blend import Blend
from search.serialize import result_json
from search.types import MODES, SearchRequest, SearchResult

if TYPE_CHECKING:
    from search.evaluate import RerankEval


@click.command("search")
@click.argument("query")
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True)
@click.option("--top-k", type=click.IntRange(1, MAX_TOP_K), default=10, show_default=True)
@click.option("--fusion", type=click.Choice(FUSION_METHODS), default=None)
@click.option("--filter", "filters", multiple=True, help="key=value metadata filter (repeatable).")
@click.option("--rerank/--no-rerank", default=None, help="Default: on when a reranker is set up.")
@click.option("--rerank-depth", type=click.IntRange(1, MAX_RERANK_DEPTH), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def search_cmd(
    ctx: Context,
    query: str,
    mode: str,
    top_k: int,
    fusion: str | None,
    filters: tuple[str, ...],
    rerank: bool | None,
    rerank_depth: int | None,
    as_json: bool,
) -> None:
    """Search the collection."""
    parsed: dict[str, Any] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--filter {item!r} is not key=value")
        parsed.setdefault(key, []).append(value)
    flat = {k: v[0] if len(v) == 1 else v for k, v in parsed.items()}
    server = ctx.server
    if server is not None:
        # A server owns the data directory: ask it (same answer, same JSON view).
        view = via_server(
            ctx,
            server,
            lambda client: client.search(
                query,
                collection=ctx.settings.collection,
                mode=mode,
                top_k=top_k,
                fusion=fusion,
                filters=flat or None,
                rerank=rerank,
                rerank_depth=rerank_depth,
            ),
        )
        view.pop("next_cursor", None)
        if as_json:
            click.echo(json.dumps(view, ensure_ascii=False))
        else:
            print_result(view)
        return
    request = SearchRequest(
        query=query,
        mode=mode,  # type: ignore[arg-type]  # click.Choice checked it
        top_k=top_k,
        fusion=fusion,
        filters=flat or None,
        collection=ctx.settings.collection,
        rerank=rerank,
        rerank_depth=rerank_depth,
    )
    result = ctx.engine.search(request)
    if as_json:
        click.echo(json.dumps(result_json(result), ensure_ascii=False))
    else:
        print_result(result)


def print_result(result: SearchResult | dict[str, Any], width: int = 100) -> None:
    """A compact human view: rank, id, score, each leg's rank, and the passage.

    ``result`` is a ``SearchResult`` or its JSON view (a server's answer).
    """
    view = result if isinstance(result, dict) else result_json(result)
    timing = " ".join(f"{k}={v:.1f}ms" for k, v in view["timings_ms"].items())
    reranked = f" reranked top {view['rerank_window']}" if view["reranked"] else ""
    click.echo(f"{view['mode']}{reranked} {view['query']!r}  [{timing}]")
    for note in stage_notes(view):
        click.echo(f"  note: {note}")
    for hit in view["hits"]:
        legs = " ".join(
            f"{name}#{hit[key]['rank']}" if hit[key] else f"{name}#-"
            for name, key in (("bm25", "bm25"), ("vec", "vector"), ("fused", "fused"))
        )
        click.echo(
            f"{hit['rank']:>3}. {hit['doc_id']}  score={hit['score']:.4f}  ({legs})  {hit['title']}"
        )
        passage = " ".join(hit["text"].split())
        click.echo(f"     {passage[: width - 5]}{'…' if len(passage) > width - 5 else ''}")
    if not view["hits"]:
        click.echo("  no results")


@click.command("eval")
@click.argument("dataset_dir", type=click.Path(path_type=Path))
@click.option("--split", default="test", show_default=True)
@click.option("--mode", type=click.Choice([*MODES, "all"]), default="all", show_default=True)
@click.option("--fusion", type=click.Choice(FUSION_METHODS), default=None)
@click.option("--weights", default=None, help="bm25,vector fusion weights, e.g. 1,0.8")
@click.option("--limit", type=click.IntRange(1), default=None, help="Evaluate the first N queries.")
@click.option("--rerank", is_flag=True, help="Add a row: hybrid with its head reranked.")
@click.option(
    "--rerank-depth",
    type=click.IntRange(1, MAX_TOP_K),
    default=None,
    help="Hits reranked per query (default: SIEVE_RERANK_DEPTH, 50).",
)
@click.option(
    "--blend-weight",
    type=click.FloatRange(min=0),
    default=None,
    help="Add a row blending the rerank with the retrieval prior (default: "
    "SIEVE_RERANK_BLEND_WEIGHT; 0: no such row).",
)
@click.option("--tune-blend", is_flag=True, help="Choose the blend weight on --tune-split first.")
@click.option("--tune-split", default="train", show_default=True)
@click.option(
    "--save-run", type=click.Path(path_type=Path), help="Write each query's ranking (JSON)."
)
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line of results.")
@click.pass_obj
def eval_cmd(
    ctx: Context,
    dataset_dir: Path,
    split: str,
    mode: str,
    fusion: str | None,
    weights: str | None,
    limit: int | None,
    rerank: bool,
    rerank_depth: int | None,
    blend_weight: float | None,
    tune_blend: bool,
    tune_split: str,
    save_run: Path | None,
    as_json: bool,
) -> None:
    """Evaluate on a BEIR-format data set: nDCG@10, Recall@100, MRR@10, latency."""
    from search.evaluate import evaluate_dataset

    parsed_weights = None
    if weights:
        try:
            w = tuple(float(x) for x in weights.split(","))
        except ValueError:
            fail(f"--weights {weights!r}: expected two numbers like 1,0.8")
        if len(w) != 2:
            fail(f"--weights {weights!r}: expected two numbers like 1,0.8")
        parsed_weights = (w[0], w[1])
    modes = list(MODES) if mode == "all" else [mode]
    plan = _rerank_eval(ctx, rerank, rerank_depth, blend_weight, tune_blend, tune_split)
    runs: dict[str, dict[str, list[str]]] = {}
    with progress(None, "indexing") as index_bar, progress(None, "queries") as query_bar:
        report = evaluate_dataset(
            ctx.settings,
            dataset_dir,
            split=split,
            modes=modes,
            fusion=fusion,
            weights=parsed_weights,
            limit=limit,
            rerank=plan,
            reranker=_eval_reranker(ctx) if plan else None,
            on_index_progress=index_bar.update,
            on_query_progress=query_bar.update,
            runs_out=runs,
        )
    if save_run is not None:
        save_run.write_text(json.dumps(runs, ensure_ascii=False), encoding="utf-8")
    for line in eval_lines(report):
        click.echo(line)
    if as_json:
        click.echo(json.dumps(report))


def _rerank_eval(
    ctx: Context,
    rerank: bool,
    depth: int | None,
    blend_weight: float | None,
    tune: bool,
    tune_split: str,
) -> RerankEval | None:
    """What ``--rerank`` and its options ask of the evaluation (None: no rerank rows)."""
    from search.evaluate import RerankEval

    if not rerank:
        asked = {"--rerank-depth": depth, "--blend-weight": blend_weight}
        used = [flag for flag, value in asked.items() if value is not None]
        if tune:
            used.append("--tune-blend")
        if used:
            fail(f"{', '.join(used)} needs --rerank")
        return None
    if tune and blend_weight is not None:
        fail("--tune-blend chooses the weight: drop --blend-weight")
    weight = ctx.settings.rerank_blend_weight if blend_weight is None else blend_weight
    return RerankEval(
        depth=depth,
        blend=Blend(weight) if weight is not None and weight > 0 else None,
        tune_split=tune_split if tune else None,
    )


def _eval_reranker(ctx: Context) -> Reranker | None:
    """The configured reranker, Celery's client included; nothing is loaded yet."""
    from api.factory import remote_reranker
    from search.engine import build_reranker

    remote = ctx.settings.rerank_backend == "celery"
    return build_reranker(
        ctx.settings.for_batch(), remote_reranker(ctx.config, ctx.celery if remote else None)
    )


def eval_lines(report: dict[str, Any]) -> list[str]:
    """The human view of an evaluation: one line per row, rerank rows with their extras."""
    lines = []
    if "blend_tuning" in report:
        tuning = report["blend_tuning"]
        grid = "  ".join(f"{w}:{v:.4f}" for w, v in tuning["ndcg@10"].items())
        lines.append(
            f"blend weight {tuning['weight']:g} chosen on {tuning['split']} "
            f"({tuning['queries']} queries), nDCG@10 by weight: {grid}"
        )
    results = report["results"]
    width = max(7, *(len(name) for name in results))
    for name, row in results.items():
        line = (
            f"{name:>{width}}: nDCG@10 {row['ndcg@10']:.4f}  Recall@100 {row['recall@100']:.4f}  "
            f"MRR@10 {row['mrr@10']:.4f}  p50 {row['p50_ms']:.1f} ms  p95 {row['p95_ms']:.1f} ms"
        )
        if "wins" in row:
            line += (
                f"  rerank p50 {row['rerank_p50_ms']:.1f} ms p95 {row['rerank_p95_ms']:.1f} ms"
                f"  vs hybrid +{row['wins']} -{row['losses']} ={row['ties']}"
            )
        if "blend_weight" in row:
            line += f"  (blend {row['blend_weight']:g})"
        lines.append(line)
        if name in report.get("ran", {}):
            lines.extend(describe(name, report["ran"][name]))
    rerank_row = results.get("rerank")
    if rerank_row is not None and rerank_row["reranked"] < report["queries"]:
        lines.append(
            f"note: {report['queries'] - rerank_row['reranked']} of {report['queries']} queries "
            "were not reranked (the reranker failed or ran late; see SIEVE_RERANK_TIMEOUT_S)"
        )
    return lines


@click.command("demo")
@click.option("--sample", type=click.Path(path_type=Path), default=SAMPLE_DIR, show_default=True)
@click.pass_obj
def demo_cmd(ctx: Context, sample: Path) -> None:
    """Index the sample corpus and run a few searches (what `make run` starts)."""
    if not (sample / "corpus.jsonl").is_file():
        fail(f"sample corpus not found at {sample}")
    paths = tuple(str(p) for p in (sample / "corpus.jsonl", sample / "docs") if p.exists())
    report, _errors = index_paths(ctx, paths)
    click.echo(
        f"indexed {report.indexed}, unchanged {report.unchanged}, data in {ctx.settings.data_dir}"
    )
    queries = [
        json.loads(line)["text"] for line in (sample / "queries.jsonl").open(encoding="utf-8")
    ]
    for query in queries[:3] + queries[-2:]:
        click.echo()
        print_result(ctx.engine.search(SearchRequest(query=query, top_k=3)))
