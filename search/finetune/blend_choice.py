"""The blend weight of a fine-tuned model, chosen on its validation queries, in its card.

After ``finetune`` has saved the best checkpoint, ``choose_blend`` loads that
folder (exactly the model users will load), scores each held-out query's hybrid
candidates with it, and tries every weight of ``search.rerank.blend.GRID``
(``search.evaluate.tune_blend``: the best mean nDCG@10, ties to the smaller
weight). The choice goes into the card as ``blend``; at query time it is used
when neither the collection nor ``SIEVE_RERANK_BLEND_WEIGHT`` sets one
(``search.rerank.blend.resolve_blend``).

It runs apart from the training loop, on the same validation split
(``split_by_query`` with the run's fraction and seed), and changes nothing of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from search.evaluate import RerankedQuery, tune_blend
from search.finetune.data import split_by_query
from search.finetune.model import CrossEncoder
from search.finetune.train import FinetuneConfig, Source
from search.finetune.validation import Validation
from search.model_folders import read_card, write_json
from search.models import MODEL_CARD
from search.rerank.blend import GRID


def choose_blend(source: Source, out: Path, config: FinetuneConfig) -> dict[str, Any] | None:
    """Choose the blend weight for the model in ``out`` and write it to its card.

    Returns the card's new ``blend`` entry, or None (and the card unchanged)
    when no validation query was held out.
    """
    import torch

    split = split_by_query(source.data.judged(), config.val_fraction, config.seed)
    validation = Validation(source, split.validation, config.rerank_depth)
    if not validation:
        return None
    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = CrossEncoder.load(out, max_length=config.max_length, query_share=config.query_share)
    model.model.to(device)
    reranked = {}
    for qid, candidates in validation.candidates.items():
        logits = model.score(validation.queries[qid], [text for _, text in candidates])
        reranked[qid] = RerankedQuery(
            head=tuple(doc_id for doc_id, _ in candidates),
            logits=tuple(logits),
            ranks=tuple(range(1, len(candidates) + 1)),  # the candidates are in hybrid order
            tail=(),
            total_ms=0.0,
            rerank_ms=0.0,
            reranked=True,
            cached=0,
        )
    blend, scores = tune_blend(validation.qrels, reranked, GRID)
    entry: dict[str, Any] = {
        "weight": blend.weight,
        "chosen_on": "validation",
        "queries": len(reranked),
        "ndcg@10": scores,
    }
    card = read_card(out)
    card["blend"] = entry
    write_json(out / MODEL_CARD, card)
    return entry
