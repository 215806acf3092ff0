"""Which window should score a long passage: the best one, the first one, or their mean.

A reranker reads at most ``max_length`` tokens a pair, so a longer passage is cut
into windows (``search.rerank.pairs.PairEncoder``). Serving scores a passage by
its best window; ``sieve finetune`` trains on first windows only. This scores
each query's hybrid top ``--depth`` once, window by window, with a model that
``sieve finetune`` wrote, and reports nDCG@10 for each way of turning window
logits into a passage score, beside the hybrid order itself.

The queries are the ones the model's fine-tune held out when it was trained on
this split (``--split train``, the default; ``held_out_ids`` reads them from its
card), else every judged query of the split.

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
from search.finetune.holdout import held_out_ids  # noqa: E402
from search.finetune.model import CrossEncoder  # noqa: E402
from search.finetune.source import from_dataset  # noqa: E402
from search.model_folders import read_card  # noqa: E402
from search.rerank.pairs import serving_max_length  # noqa: E402

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

    folder = Path(args.model)
    source = from_dataset(Settings.from_env(), args.dataset, split=args.split)
    judged = source.data.judged()
    describe = source.describe
    qids = held_out_ids(
        read_card(folder), describe["name"], describe["corpus_sha256"], args.split, judged
    )
    qids = judged if qids is None else qids
    length = serving_max_length(None, folder)
    model = CrossEncoder.load(folder, max_length=length)
    qrels = {q: dict(source.data.qrels[q]) for q in qids}
    runs: dict[str, dict[str, list[str]]] = {"hybrid": {}, **{name: {} for name in AGGREGATES}}
    windows = passages = 0
    for qid in qids:
        query = source.data.queries[qid]
        ids = [d for d in source.retrieve(query, args.depth) if source.text_of(d)]
        pairs, logits = model.window_logits(query, [source.text_of(d) or "" for d in ids])
        windows, passages = windows + len(pairs), passages + len(ids)
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
                "windows_per_passage": round(windows / max(1, passages), 2),
                "ndcg@10": ndcg,
            }
        )
    )


if __name__ == "__main__":
    main()
