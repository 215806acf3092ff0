"""The fine-tuning loop: listwise loss, AdamW with warm-up, early stopping, safe checkpoints.

``finetune(source, start, out, config)`` splits the judged queries by query,
mines hard negatives (``search.finetune.data``), and trains. Every evaluation
reranks each validation query's hybrid top ``rerank_depth`` and computes
nDCG@10 (``search.evaluate.metrics``); an improvement is saved as the
checkpoint and ``patience`` evaluations without one stop the run.

A checkpoint is written to a temporary folder beside ``out`` and renamed into
place (``search.model_folders.replace_folder``), so ``out`` always holds a
complete model. A ``KeyboardInterrupt`` during training keeps the best
checkpoint (or, before the first evaluation, saves the current weights),
finishes the card and returns normally with ``stopped="interrupted"``.

Nothing here draws progress: ``on_step`` and ``on_eval`` report to the caller.
"""

from __future__ import annotations

import math
import random
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from search.errors import ConfigError
from search.finetune.data import (
    JudgedQueries,
    build_groups,
    data_fingerprint,
    mine_negatives,
    split_by_query,
)
from search.finetune.holdout import fit_holdout
from search.finetune.model import CrossEncoder
from search.finetune.validation import Validation
from search.model_folders import read_card, replace_folder, write_json
from search.models import MODEL_CARD, LocatedModel

CARD_FORMAT = 1


class Source(Protocol):
    """What training needs of its data (``search.finetune.source.TrainingSource``)."""

    data: JudgedQueries
    describe: dict[str, Any]
    filler: Sequence[str]

    def text_of(self, doc_id: str) -> str | None: ...

    def retrieve(self, query: str, depth: int) -> list[str]: ...

    def corpus_digest(self) -> str: ...


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyper-parameters; every one is written to the model card."""

    # Defaults measured on SciFact from the bundled MiniLM (docs/benchmarks.md): small
    # steps help a new head most (2-group steps beat 8-group ones), and on a CPU two
    # epochs of 128-token inputs beat one of 256 in less time (passages are scored
    # as served, by their best 128-token window).
    negatives: int = 7  # per positive, in each listwise group
    epochs: int = 2
    batch_size: int = 2  # groups per step: (1 + negatives) * batch_size pairs
    lr: float = 4e-5
    # The learning rate of a head initialised here (0: ``lr``). A new head starts
    # near zero, and until it grows the encoder below it gets almost no gradient.
    head_lr: float = 0.0
    warmup: float = 0.1  # share of the steps spent warming up the learning rate
    weight_decay: float = 0.01
    max_length: int = 128
    query_share: float = 0.25
    val_fraction: float = 0.1
    mine_depth: int = 30  # hybrid top-k that negatives are mined from
    rerank_depth: int = 20  # validation reranks the hybrid top-k
    skip_top: int = 0
    dedup_jaccard: float = 0.8
    patience: int = 3  # evaluations without improvement before stopping
    evals_per_epoch: int = 1
    max_steps: int = 0  # 0: no limit beyond the epochs
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision, on CUDA only (bf16 where supported, else fp16)

    def __post_init__(self) -> None:
        checks = [
            ("negatives", self.negatives >= 1),
            ("epochs", self.epochs >= 1),
            ("batch_size", self.batch_size >= 1),
            ("lr", self.lr > 0),
            ("head_lr", self.head_lr >= 0),
            ("warmup", 0 <= self.warmup < 1),
            ("max_length", self.max_length >= 32),
            ("val_fraction", 0 <= self.val_fraction < 1),
            ("mine_depth", self.mine_depth >= 1),
            ("rerank_depth", self.rerank_depth >= 1),
            ("skip_top", self.skip_top >= 0),
            ("dedup_jaccard", 0 < self.dedup_jaccard <= 1),
            ("patience", self.patience >= 1),
            ("evals_per_epoch", self.evals_per_epoch >= 1),
            ("max_steps", self.max_steps >= 0),
            ("device", self.device.split(":")[0] in ("auto", "cpu", "cuda")),
        ]
        for name, ok in checks:
            if not ok:
                raise ConfigError(
                    f"fine-tuning {name}={getattr(self, name)!r} is out of range", field=name
                )


@dataclass(frozen=True)
class Step:
    """One optimiser step, as reported to ``on_step``."""

    step: int
    total: int
    epoch: int
    loss: float
    pairs_per_s: float


@dataclass(frozen=True)
class Evaluation:
    """One validation pass, as reported to ``on_eval``."""

    step: int
    metrics: dict[str, float]
    improved: bool


@dataclass(frozen=True)
class FinetuneResult:
    """What a run produced: the model folder, its card, and the verdict."""

    out: Path
    card: dict[str, Any]
    stopped: str  # "completed", "early_stopping", "max_steps" or "interrupted"
    before: dict[str, float] | None  # validation, hybrid order (no reranking)
    after: dict[str, float] | None  # validation, reranked by the saved model
    losses: list[float] = field(default_factory=list)

    @property
    def better(self) -> bool | None:
        """Whether the saved model beats no reranking on validation nDCG@10 (None: unknown)."""
        if self.before is None or self.after is None:
            return None
        return self.after["ndcg@10"] > self.before["ndcg@10"]


def _device(torch: Any, wanted: str) -> str:
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"fine-tuning device {wanted!r} asked for, but CUDA is not available")
    return wanted


def evaluation_due(step: int, every: int, total: int) -> bool:
    """Whether to validate after ``step``: every ``every`` steps and after the last.

    A scheduled evaluation less than half an interval before the last step gives
    way to the final one (415 steps, every 207: at 207 and 415, not 414 too).
    """
    return step >= total or (step % every == 0 and step + every // 2 <= total)


def _save(model: CrossEncoder, out: Path, card: dict[str, Any]) -> None:
    """Write the model and its card to a folder beside ``out``, then rename it into place."""
    temp = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        model.save(temp)
        write_json(temp / MODEL_CARD, card)
        replace_folder(temp, out)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _optimizer(model: CrossEncoder, config: FinetuneConfig, total: int) -> tuple[Any, Any]:
    """AdamW (no weight decay on biases and norms; a new head at ``head_lr``) and a
    linear warm-up then decay."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    head_lr = config.head_lr or config.lr
    groups: dict[tuple[float, float], list[Any]] = {}  # (weight decay, lr) -> parameters
    for name, param in model.model.named_parameters():
        decay = 0.0 if name.endswith(no_decay) else config.weight_decay
        lr = head_lr if name in model.new_keys else config.lr
        groups.setdefault((decay, lr), []).append(param)
    params = [{"params": ps, "weight_decay": d, "lr": lr} for (d, lr), ps in groups.items()]
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    return optimizer, get_linear_schedule_with_warmup(optimizer, int(config.warmup * total), total)


def finetune(
    source: Source,
    start: LocatedModel,
    out: Path,
    config: FinetuneConfig = FinetuneConfig(),
    *,
    on_step: Callable[[Step], None] | None = None,
    on_eval: Callable[[Evaluation], None] | None = None,
    on_mine_progress: Callable[[int], None] | None = None,
) -> FinetuneResult:
    """Fine-tune ``start`` on ``source``'s judged queries; the best model lands in ``out``."""
    import torch

    started = time.monotonic()
    out = Path(out)
    data = source.data
    split = split_by_query(data.judged(), config.val_fraction, config.seed)
    if not split.train:
        raise ConfigError("no training query is left after the validation split")
    pools = mine_negatives(
        data,
        split.train,
        source.retrieve,
        source.text_of,
        depth=config.mine_depth,
        skip_top=config.skip_top,
        dedup_jaccard=config.dedup_jaccard,
        on_progress=on_mine_progress,
    )
    validation = Validation(source, split.validation, config.rerank_depth)

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    device = _device(torch, config.device)
    model = CrossEncoder.load(
        start.folder, max_length=config.max_length, query_share=config.query_share
    )
    model.model.to(device)
    on_cuda = device.startswith("cuda")
    amp_dtype = None
    if on_cuda and config.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # bf16 keeps fp32's exponent range; only fp16 needs its gradients scaled.
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    groups = build_groups(
        data, split.train, pools, source.text_of, config.negatives, rng, source.filler
    )
    if not groups:
        raise ConfigError("no training group could be built: no negative was found for any query")
    steps_per_epoch = math.ceil(len(groups) / config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps:
        total = min(total, config.max_steps)
    eval_every = max(1, steps_per_epoch // config.evals_per_epoch)

    optimizer, schedule = _optimizer(model, config, total)

    before = validation.hybrid() if validation else None
    # A new head orders the candidates at random: validating it would only cost
    # a pass over every validation pair (the card says "new head" instead).
    at_start = validation.reranked(model) if validation and not model.new_head else None
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "kind": "cross-encoder reranker",
        "base_model": {"name": start.name, "fingerprint": start.fingerprint},
        "data": {
            **source.describe,
            "fingerprint": data_fingerprint(source.corpus_digest(), data, split),
            "train_queries": len(split.train),
            "validation_queries": len(split.validation),
            "validation_ids": list(split.validation),
            "groups_per_epoch": len(groups),
            "negatives_guard": f"near-duplicates of a positive dropped (Jaccard >= "
            f"{config.dedup_jaccard}); top {config.skip_top} ranks skipped",
        },
        "hyperparameters": {**asdict(config), "device": device, "amp": str(amp_dtype or "off")},
        "metrics": {
            "validation": {
                "before": before,
                "start": "new head, not validated" if model.new_head else at_start,
                "after": None,
            }
        },
    }
    languages = read_card(start.folder).get("languages")
    if languages:
        card["languages"] = languages
    best: dict[str, float] | None = None
    best_step = 0
    bad_evals = 0
    losses: list[float] = []
    step = 0
    stopped = "completed"
    saved = False

    def card_now(state: str) -> dict[str, Any]:
        card["metrics"]["validation"]["after"] = best
        card["metrics"]["best_step"] = best_step
        card["metrics"]["train_loss"] = {
            "first": losses[0] if losses else None,
            "last": losses[-1] if losses else None,
        }
        card["steps"] = step
        card["stopped"] = state
        card["created"] = datetime.now(UTC).isoformat(timespec="seconds")
        card["wall_time_s"] = round(time.monotonic() - started, 1)
        if before is not None and best is not None:
            card["better_than_no_rerank"] = best["ndcg@10"] > before["ndcg@10"]
        return card

    def evaluate() -> bool:
        """Validate; save on improvement; True when early stopping says stop."""
        nonlocal best, best_step, bad_evals, saved
        if not validation:
            return False
        now = validation.reranked(model)
        improved = best is None or now["ndcg@10"] > best["ndcg@10"]
        if improved:
            best, best_step, bad_evals = now, step, 0
            _save(model, out, card_now("running"))
            saved = True
        else:
            bad_evals += 1
        if on_eval is not None:
            on_eval(Evaluation(step, now, improved))
        return bad_evals >= config.patience

    model.model.train()
    try:
        for epoch in range(config.epochs):
            if epoch:
                groups = build_groups(
                    data, split.train, pools, source.text_of, config.negatives, rng, source.filler
                )
            for first in range(0, len(groups), config.batch_size):
                batch = groups[first : first + config.batch_size]
                t0 = time.perf_counter()
                autocast = torch.autocast("cuda", dtype=amp_dtype) if amp_dtype else nullcontext()
                with autocast:
                    loss = model.loss(batch)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.model.parameters(), 1.0)
                scaler.step(optimizer)
                scaler.update()
                schedule.step()
                step += 1
                losses.append(round(float(loss.detach()), 4))
                pairs = sum(1 + len(g.negatives) for g in batch)
                if on_step is not None:
                    rate = pairs / max(time.perf_counter() - t0, 1e-9)
                    on_step(Step(step, total, epoch + 1, losses[-1], rate))
                if evaluation_due(step, eval_every, total) and evaluate():
                    stopped = "early_stopping"
                    break
                if step >= total:
                    break
            if stopped != "completed" or step >= total:
                break
        if stopped == "completed" and step < steps_per_epoch * config.epochs:
            stopped = "max_steps"
    except KeyboardInterrupt:
        stopped = "interrupted"
    if not saved or not (out / "config.json").is_file():
        # No validation, interrupted before the first one (or inside the rename of
        # a checkpoint): the weights as they are.
        _save(model, out, card_now(stopped))
    else:
        write_json(out / MODEL_CARD, card_now(stopped))
    if validation and stopped != "interrupted":
        # An interrupted run ends at once; `sieve calibrate` can fit it later.
        fitted = fit_holdout(
            source,
            split.validation,
            out,
            dataset=str(source.describe.get("name") or source.describe.get("collection") or ""),
            max_length=config.max_length,
            query_share=config.query_share,
        )
        card["blend"] = fitted.card_entry()
        if fitted.calibration is not None and fitted.calibration.fitted_on is not None:
            card["calibration"] = {
                "method": fitted.calibration.method,
                "ece": fitted.calibration.fitted_on.ece_after,
            }
        card["wall_time_s"] = round(time.monotonic() - started, 1)
        write_json(out / MODEL_CARD, card)
    return FinetuneResult(out, card, stopped, before, best, losses)
