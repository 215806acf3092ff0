"""Reranking commands: ``sieve rerank``, ``sieve compare``."""

from __future__ import annotations

import json
import sys

import click

from api.cli.context import Context, stage_notes
from search.request import MAX_RERANK_DEPTH
from search.rerank.blend import retrieval_rank
from search.types import Hit, SearchRequest, SearchResult

BAR_WIDTH = 20


def bar(value: float, top: float, width: int = BAR_WIDTH) -> str:
    """A text bar of ``value`` relative to ``top`` (at least one block when positive)."""
    if top <= 0 or value <= 0:
        return " " * width
    filled = max(1, round(width * min(value, top) / top))
    return "█" * filled + "·" * (width - filled)


@click.command("rerank")
@click.argument("query")
@click.argument("docs", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def rerank_cmd(ctx: Context, query: str, docs: tuple[str, ...], as_json: bool) -> None:
    """Score DOCS (texts) against QUERY with the configured cross-encoder."""
    from api.factory import remote_reranker
    from search.rerank import CrossEncoderReranker

    if not query.strip():
        raise click.UsageError("the query is empty")
    remote = ctx.settings.rerank_backend == "celery"
    reranker = remote_reranker(ctx.config, ctx.celery if remote else None)
    reranker = reranker or CrossEncoderReranker.from_settings(ctx.settings)
    batch = reranker.rerank(query, list(docs))
    order = batch.best_first()
    if as_json:
        rows = [
            {"index": i, "logit": batch.scores[i].logit, "score": batch.scores[i].score}
            for i in order
        ]
        click.echo(json.dumps({"model": reranker.model_key, "results": rows}))
        return
    click.echo(f"model {reranker.model_key}  [{_timings(batch.timings_ms)}]")
    for rank, i in enumerate(order, start=1):
        s = batch.scores[i]
        text = " ".join(docs[i].split())
        click.echo(
            f"{rank:>3}. {bar(s.score, 1.0)} {s.score:.3f} (logit {s.logit:+.2f})  {text[:70]}"
        )


def _timings(timings: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.1f}ms" for k, v in timings.items())


def retrieval_score(hit: Hit) -> float:
    """The score that ordered the hit before reranking."""
    leg = hit.fused or hit.bm25 or hit.vector
    return leg.score if leg else hit.score


def render_compare(result: SearchResult, top_k: int) -> list[str]:
    """Two columns: retrieval order and reranked order, with bars and movement."""
    before = sorted(result.hits, key=retrieval_rank)[:top_k]
    after = result.hits[:top_k]
    top_before = max((retrieval_score(h) for h in before), default=1.0)
    lines = [f"query: {result.query!r}  [{_timings(result.timings_ms)}]"]
    lines += stage_notes(result)
    head = f"{'retrieval order (' + (result.fusion or result.mode) + ')':<48}  reranked"
    lines.append(head if result.reranked else head + " (not reranked)")
    for i in range(max(len(before), len(after))):
        left = right = ""
        if i < len(before):
            h = before[i]
            value = retrieval_score(h)
            left = f"{i + 1:>2}. {bar(value, top_before, 10)} {h.doc_id[:30]:<30}"
        if i < len(after) and result.reranked:
            h = after[i]
            moved = retrieval_rank(h) - h.rank
            arrow = f"↑{moved}" if moved > 0 else f"↓{-moved}" if moved < 0 else "="
            score = h.rerank_score if h.rerank_score is not None else 0.0
            right = f"{h.rank:>2}. {bar(score, 1.0, 10)} {score:.3f} {arrow:>3} {h.doc_id[:30]}"
        lines.append(f"{left:<48}  {right}")
    return lines


@click.command("compare")
@click.argument("query")
@click.option("--top-k", type=click.IntRange(1, 50), default=10, show_default=True)
@click.option(
    "--depth", type=click.IntRange(1, MAX_RERANK_DEPTH), default=None, help="Rerank depth."
)
@click.pass_obj
def compare_cmd(ctx: Context, query: str, top_k: int, depth: int | None) -> None:
    """Retrieval order next to the reranked order, with score bars and timings.

    The last line names the reranker; without one, the retrieval order is shown
    alone, then why there is no reranker and the command that fixes it (exit 0:
    nothing failed). A reranker that is there but did not answer exits 1.
    """
    from search.rerank.status import cuda_present, describe

    engine = ctx.engine
    result = engine.search(
        SearchRequest(
            query=query,
            top_k=top_k,
            rerank=engine.reranker is not None,
            rerank_depth=depth if engine.reranker is not None else None,
            collection=ctx.settings.collection,
        )
    )
    for line in render_compare(result, top_k):
        click.echo(line)
    status = describe(ctx.settings, engine.reranker, cuda=cuda_present())
    click.echo(status.line())
    if status.active and not result.reranked and result.hits:
        sys.exit(1)
