"""``sieve models``: the models in use and in the models folder; ``sieve models pull``."""

from __future__ import annotations

import json
from typing import Any

import click

from api.cli.context import Context, cuda_here, pull_model
from search.errors import ModelNotFound
from search.models import BUNDLED_MODEL_ID, locate


def _in_use(ctx: Context) -> list[dict[str, Any]]:
    """The embedder and the reranker the settings name: where each is found, if anywhere."""
    settings = ctx.settings
    wanted = [
        ("embedder", settings.embed_model or BUNDLED_MODEL_ID, None, ""),
        ("reranker", settings.rerank_model, settings.rerank_models_dir, settings.rerank_revision),
    ]
    rows = []
    for role, name, models_dir, revision in wanted:
        row: dict[str, Any] = {"role": role, "name": name}
        if role == "reranker" and settings.rerank_backend == "none":
            row["found_in"] = "off (SIEVE_RERANK_BACKEND=none)"
            rows.append(row)
            continue
        try:
            found = locate(name, models_dir, revision=revision)
        except ModelNotFound:
            row["found_in"] = "not found"
        else:
            row.update(found_in=found.found_in, folder=str(found.folder))
            row["fingerprint"] = found.fingerprint
        rows.append(row)
    return rows


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]  # int becomes float, only for display
    return str(n)


@click.group("models", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models_cmd(click_ctx: click.Context, as_json: bool) -> None:
    """List the embedder and reranker in use and every model in the models folder."""
    if click_ctx.invoked_subcommand is not None:
        return
    from search.model_folders import list_models

    ctx: Context = click_ctx.obj
    models_dir = ctx.settings.rerank_models_dir
    in_use = _in_use(ctx)
    folders = list_models(models_dir)
    if as_json:
        listed = [
            {
                "name": m.name,
                "folder": str(m.folder),
                "fingerprint": m.fingerprint,
                "size_bytes": m.size_bytes,
                "languages": m.languages,
                "metrics": m.metrics,
                "calibrated": m.calibrated,
            }
            for m in folders
        ]
        payload = {"in_use": in_use, "models_dir": str(models_dir), "models": listed}
        click.echo(json.dumps(payload))
        return
    for row in in_use:
        where = row["found_in"] + (f" {row['folder']}" if "folder" in row else "")
        fingerprint = f"  fingerprint {row['fingerprint']}" if "fingerprint" in row else ""
        click.echo(f"{row['role']:<9} {row['name']}  ({where}){fingerprint}")
    click.echo(f"models folder {models_dir}: {len(folders)} model(s)")
    for m in folders:
        metrics = " ".join(f"{k} {v:.4f}" for k, v in m.metrics.items() if isinstance(v, float))
        click.echo(
            f"  {m.name}  fingerprint {m.fingerprint}  {_size(m.size_bytes)}"
            f"  languages {','.join(m.languages) or '-'}"
            f"  calibration {'yes' if m.calibrated else 'no'}" + (f"  {metrics}" if metrics else "")
        )


@models_cmd.command("pull")
@click.argument("name", required=False)
@click.option(
    "--endpoint", default=None, help="Hub URL (default: HF_ENDPOINT, else huggingface.co)."
)
@click.option("--revision", default=None, help="Branch, tag or commit (default: main).")
@click.pass_obj
def pull_cmd(ctx: Context, name: str | None, endpoint: str | None, revision: str | None) -> None:
    """Download model NAME from the Hugging Face hub into the models folder.

    Without NAME, the default reranker for this machine: BAAI/bge-reranker-v2-m3
    with a GPU, a small multilingual cross-encoder without (search.models).
    The only command that downloads.
    """
    from search.models import default_reranker

    repo_id = name or default_reranker(cuda_here(ctx.settings))
    folder = pull_model(ctx.settings, repo_id, endpoint=endpoint, revision=revision)
    click.echo(f"pulled {repo_id} into {folder}")
    if repo_id != ctx.settings.rerank_model:
        click.echo(f"to rerank with it: SIEVE_RERANK_MODEL={repo_id}")
