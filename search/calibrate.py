"""Fit the reranker's calibration on a BEIR-format data set's judged queries.

``calibrate_dataset`` indexes the corpus (or reuses the index, see
``search.evaluate.prepare_index``), runs hybrid retrieval with reranking for
every judged query of one split, and takes the raw logit of each of the top
``depth`` reranked hits with its label: relevant when the split's qrels give the
(query, document) pair a grade above 0. An unjudged document counts as not
relevant, as in trec_eval; on sparsely judged data (SciFact judges one or two
documents per query) this underestimates P(relevant), so the calibrated
relevance errs low, which is the safe side for abstaining. The calibration is
fitted (``search.rerank.calibration.fit``) and written beside the model as
``sieve-calibration.json``, keyed to the model's fingerprint.

The same reranked queries choose a blend weight (``search.blend_choice``),
stored with the collection ``settings.collection`` names (the one the data set
stands for): for that collection it wins over ``SIEVE_RERANK_BLEND_WEIGHT`` and
the model card's weight (``search.rerank.blend.resolve_blend``).

Calibrate on a split you do not evaluate on (``dev`` or ``train``, never
``test``). A model fine-tuned on the same split (its card says so) is
calibrated on the queries its fine-tune held out only
(``search.finetune.holdout.held_out_ids``). The same reranked heads choose the
blend weight (``search.blend_choice``), reported beside the calibration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.blend_choice import choose_blend
from search.config import Settings
from search.errors import BackendUnavailable, ConfigError, InvalidRequest
from search.evaluate import Dataset, RerankedQuery, prepare_index
from search.finetune.holdout import held_out_ids
from search.model_folders import read_card
from search.models import LocatedModel, locate
from search.request import MAX_TOP_K
from search.rerank.base import Reranker
from search.rerank.calibration import Calibration, fit_judged, save_calibration
from search.types import SearchRequest

SPLITS = ("dev", "train")


@dataclass(frozen=True)
class CalibrationReport:
    """A fitted calibration, where it was written, and the model it belongs to."""

    calibration: Calibration
    path: Path
    model: LocatedModel
    # The blend weight chosen on the same queries, as stored with ``collection``.
    blend: dict[str, Any] | None = None
    collection: str = ""


def reranker_model(settings: Settings) -> LocatedModel:
    """The configured reranker model's files on this machine (offline)."""
    return locate(
        settings.rerank_model,
        settings.rerank_models_dir,
        allow_download=False,
        revision=settings.rerank_revision,
        kind="reranker model",
        hint="Calibration writes beside the model: it must be on this machine.",
    )


def calibrate_dataset(
    settings: Settings,
    dataset_dir: str | Path,
    *,
    split: str = "dev",
    method: str = "auto",
    depth: int = 50,
    limit: int | None = None,
    reranker: Reranker | None = None,
    on_index_progress: Callable[[int], None] | None = None,
    on_query_progress: Callable[[int], None] | None = None,
) -> CalibrationReport:
    """Fit and store the calibration of the configured reranker (see the module docstring).

    ``reranker`` replaces the one built from ``settings`` (the command line passes
    the Celery client when reranking runs on workers); ``limit`` keeps the first
    N judged queries.
    """
    from search.engine import BLEND_SETTING, FROM_SETTINGS, SearchEngine
    from search.registry import Registry

    if split not in SPLITS:
        raise InvalidRequest(
            f"calibrate on {' or '.join(SPLITS)}, not {split!r}: a split you evaluate on "
            "would grade the calibration on its own data"
        )
    if not 1 <= depth <= MAX_TOP_K:
        raise InvalidRequest(f"depth must be from 1 to {MAX_TOP_K}", depth=depth)
    model = reranker_model(settings)
    dataset = Dataset.open(dataset_dir, split)
    qrels, queries = dataset.judged(limit)
    held_out = held_out_ids(
        read_card(model.folder), dataset.name, dataset.corpus_digest(), split, list(queries)
    )
    if held_out is not None:
        # The model was fine-tuned on this split: only the queries it held out count.
        queries = {q: queries[q] for q in held_out}
        split = f"{split} (held out by the fine-tune)"
    eval_settings = prepare_index(settings, dataset, on_index_progress)
    logits: list[float] = []
    labels: list[bool] = []
    groups: list[str] = []
    heads: dict[str, RerankedQuery] = {}
    chosen = FROM_SETTINGS if reranker is None else reranker
    with SearchEngine(eval_settings, reranker=chosen) as engine:
        if engine.reranker is None:
            raise ConfigError(
                "no reranker is configured: set SIEVE_RERANK_MODEL (and SIEVE_RERANK_BACKEND "
                "to local or celery) to calibrate it"
            )
        for qid, text in queries.items():
            request = SearchRequest(
                query=text, top_k=depth, collection="eval", rerank=True, rerank_depth=depth
            )
            result = engine.search(request)
            if not result.reranked:
                why = result.degraded_reasons.get("rerank", "no reason given")
                raise BackendUnavailable(f"the reranker did not answer: {why}", backend="rerank")
            heads[qid] = RerankedQuery.of(result, 0.0)
            judged = qrels.get(qid, {})
            for hit in result.hits:
                if hit.rerank_logit is not None:
                    logits.append(hit.rerank_logit)
                    labels.append(judged.get(hit.doc_id, 0) > 0)
                    groups.append(qid)
            if on_query_progress is not None:
                on_query_progress(1)
    calibration = fit_judged(
        logits,
        labels,
        groups,
        method=method,
        model_fingerprint=model.fingerprint,
        dataset=dataset.name,
        split=split,
        depth=depth,
    )
    path = save_calibration(calibration, model.folder)
    # The blend weight on the same judged queries, stored with the collection these
    # judgements stand for: it wins over the setting and the card for that collection.
    blend = choose_blend({q: qrels.get(q, {}) for q in heads}, heads)
    entry: dict[str, Any] = {
        **blend.entry(),
        "model_fingerprint": model.fingerprint,
        "chosen_on": f"{dataset.name}/{split}",
    }
    registry = Registry(settings.registry)
    try:
        registry.set_collection_setting(settings.collection, BLEND_SETTING, entry)
    finally:
        registry.close()
    return CalibrationReport(calibration, path, model, entry, settings.collection)
