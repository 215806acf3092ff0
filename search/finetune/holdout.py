"""What the held-out queries decide after training: the blend weight and the calibration.

The queries ``sieve finetune`` held out (``search.finetune.data.split_by_query``)
are the only judged queries the new model has not learnt from, so they choose
the blend of its score with the retrieval prior (``search.blend_choice``: the
best weight only when it significantly beats the retrieval order; it goes in
the model card) and fit its logit -> P(relevant) map
(``sieve-calibration.json`` beside the weights). Both see the hybrid top
``depth`` of each query, the head a served query reranks, scored as serving
scores it (each passage's best window).

``held_out_ids`` says which queries those were, from the card, so that
``sieve calibrate`` on the data a model was trained on uses them too, and
never the training queries, whose logits the model has learnt to separate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.blend_choice import BlendChoice, choose_blend
from search.errors import InvalidRequest
from search.evaluate import RerankedQuery
from search.finetune.data import split_by_query
from search.finetune.model import CrossEncoder
from search.finetune.validation import Candidates, Validation
from search.models import locate
from search.rerank.calibration import Calibration, fit_judged, save_calibration

# The served default: a query reranks its hybrid top 50 (``Settings.rerank_depth``).
HOLDOUT_DEPTH = 50


@dataclass(frozen=True)
class HoldoutFit:
    """The blend chosen on the held-out queries and the calibration fitted there."""

    blend: BlendChoice
    calibration: Calibration | None  # None: the held-out pairs had one class only
    depth: int

    def card_entry(self) -> dict[str, Any]:
        """What the model card says about the blend (``blend`` key)."""
        return {**self.blend.entry(), "chosen_on": "validation", "depth": self.depth}


def fit_holdout(
    source: Candidates,
    qids: Sequence[str],
    folder: Path,
    *,
    dataset: str,
    max_length: int,
    query_share: float,
    depth: int = HOLDOUT_DEPTH,
) -> HoldoutFit:
    """Score the held-out queries' heads with the model in ``folder``; choose and fit.

    The calibration is written beside the model, keyed to its fingerprint.
    """
    model = CrossEncoder.load(folder, max_length=max_length, query_share=query_share)
    heads = Validation(source, qids, depth)
    reranked: dict[str, RerankedQuery] = {}
    logits: list[float] = []
    labels: list[bool] = []
    groups: list[str] = []
    for qid, candidates in heads.candidates.items():
        scores = model.score(heads.queries[qid], [text for _, text in candidates])
        ids = tuple(doc_id for doc_id, _ in candidates)
        reranked[qid] = RerankedQuery(
            head=ids,
            logits=tuple(scores),
            ranks=tuple(range(1, len(ids) + 1)),
            tail=(),
            total_ms=0.0,
            rerank_ms=0.0,
            reranked=True,
            cached=0,
        )
        judged = heads.qrels[qid]
        for doc_id, logit in zip(ids, scores, strict=True):
            logits.append(logit)
            labels.append(judged.get(doc_id, 0) > 0)
            groups.append(qid)
    blend = choose_blend(heads.qrels, reranked)
    calibration = None
    if 0 < sum(labels) < len(labels):
        calibration = fit_judged(
            logits,
            labels,
            groups,
            method="auto",
            model_fingerprint=locate(str(folder), folder.parent, kind="model").fingerprint,
            dataset=dataset,
            split="validation",
            depth=depth,
        )
        save_calibration(calibration, folder)
    return HoldoutFit(blend, calibration, depth)


def held_out_ids(
    card: dict[str, Any], dataset: str, corpus_sha256: str, split: str, judged: Sequence[str]
) -> list[str] | None:
    """The queries a fine-tune held out, when its card says it trained on this split.

    None when the model was not fine-tuned on ``dataset``'s ``split`` (any of its
    judged queries may then be used). Cards list the ids; older ones are
    recomputed from the split's seed and fraction, and must give the same count.
    """
    data = card.get("data") or {}
    if data.get("corpus_sha256") != corpus_sha256 or data.get("split") != split:
        return None
    if "validation_ids" in data:
        return [q for q in data["validation_ids"] if q in set(judged)]
    params = card.get("hyperparameters") or {}
    ids = split_by_query(judged, float(params.get("val_fraction", 0.0)), int(params.get("seed", 0)))
    if len(ids.validation) != data.get("validation_queries"):
        raise InvalidRequest(
            f"the model was fine-tuned on {dataset}/{split} with {data.get('validation_queries')} "
            f"held-out queries, and they cannot be told apart from its training queries here; "
            "calibrate on another split or data set",
        )
    return list(ids.validation)
