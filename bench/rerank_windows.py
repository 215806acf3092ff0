"""Which window should score a long passage: the best one, the first one, or their mean.

A reranker reads at most ``max_length`` tokens a pair, so a longer passage is cut
into windows (``search.rerank.pairs.PairEncoder``). Serving scores a passage by
its best window; ``sieve finetune`` trains on first windows only. This scores
each query's hybrid top ``--depth`` once, window by window, with a model that
``sieve finetune`` wrote, and reports nDCG@10 for each way of turning window
logits into a passage score, beside the hybrid order itself.

The queries are the ones the model's fine-tune held out (``--split train``, the
default, read from its card) or every judged query of another split.

    .venv/bin/python bench/rerank_windows.py data/models/scifact-minilm ../shared/data/scifact
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.config import Settings  # noqa: E402
from search.evaluate import metrics  # noqa: E402
from search.finetune.model import SCORE_BATCH, CrossEncoder  # noqa: E402
from search.finetune.source import from_dataset  # noqa: E402
from search.model_folders import read_card  # noqa: E402

# Window logits of one passage -> its score.
AGGREGATES: dict[str, Callable[[Sequence[float]], float]] = {
    "best": max,
    "first": lambda logits: logits[0],
    "mean": lambda logits: sum(logits) / len(logits),
}


def passage_scores(
    indexes: Sequence[int], logits: Sequence[float], count: int
) -> dict[str, list[float]]:
    """Per aggregate, one score per passage ``0 .. count-1`` from its windows' logits.

    ``indexes`` and ``logits`` run window by window, a passage's windows in order.
    """
    windows: list[list[float]] = [[] for _ in range(count)]
    for index, logit in zip(indexes, logits, strict=True):
        windows[index].append(logit)
    return {name: [agg(w) for w in windows] for name, agg in AGGREGATES.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model folder written by sieve finetune")
    parser.add_argument("dataset", help="the BEIR folder it was fine-tuned on")
    parser.add_argument("--split", default="train", help="train: the held-out queries only")
    parser.add_argument("--depth", type=int, default=50)
    args = parser.parse_args()

    import torch

    folder = Path(args.model)
    card = read_card(folder)
    source = from_dataset(Settings.from_env(), args.dataset, split=args.split)
    qids = source.data.judged()
    if args.split == "train":
        held_out = set(card.get("data", {}).get("validation_ids") or ())
        qids = [q for q in qids if q in held_out]
    length = int(card.get("hyperparameters", {}).get("max_length") or 512)
    model = CrossEncoder.load(folder, max_length=length)
    model.model.eval()
    qrels = {q: dict(source.data.qrels[q]) for q in qids}
    runs: dict[str, dict[str, list[str]]] = {"hybrid": {}, **{name: {} for name in AGGREGATES}}
    windows = 0
    for qid in qids:
        ids = [
            d for d in source.retrieve(source.data.queries[qid], args.depth) if source.text_of(d)
        ]
        pairs = model.encoder.encode(
            source.data.queries[qid], [source.text_of(d) or "" for d in ids]
        )
        logits: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(pairs), SCORE_BATCH):
                batch = model.inputs(pairs[start : start + SCORE_BATCH])
                logits += model.model(**batch).logits[:, 0].float().tolist()
        windows += len(pairs)
        runs["hybrid"][qid] = ids
        for name, scores in passage_scores([p.index for p in pairs], logits, len(ids)).items():
            order = sorted(range(len(ids)), key=lambda i: (-scores[i], i))
            runs[name][qid] = [ids[i] for i in order]
    ndcg = {name: round(metrics(qrels, run)["ndcg@10"], 4) for name, run in runs.items()}
    print(
        json.dumps(
            {
                "model": str(folder),
                "split": args.split,
                "queries": len(qids),
                "max_length": length,
                "windows_per_passage": round(
                    windows / max(1, sum(map(len, runs["hybrid"].values()))), 2
                ),
                "ndcg@10": ndcg,
            }
        )
    )


if __name__ == "__main__":
    main()
