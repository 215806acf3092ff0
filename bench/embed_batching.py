"""Indexing-path embedding: fixed batches against token-budget batches, in one run.

The texts are what the indexer embeds: each document of the corpus cleaned and
chunked by ``search.indexing.prepare`` (title, then the chunk), in indexing
batches of ``--docs-per-batch`` documents, as ``Indexer`` sends them. The
configurations take turns batch by batch, so load on a shared machine falls on
all alike:

- ``fixed 32``: 32 texts per forward pass, longest first, whatever their length
  (a budget too large to bind): the embedder before token budgets, which sorted
  by characters instead of tokens;
- ``budget B, at most N``: texts batched longest first under B padded tokens
  (``search.batching.budget_batches``), at most N per pass.

Also reported: padded tokens per real token (the work spent on padding) and the
largest difference between a configuration's vectors and the fixed batches'.

Run: ``.venv/bin/python bench/embed_batching.py [--data ../shared/data/scifact]
[--docs 1500] [--runtime onnx]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.batching import batched, budget_batches  # noqa: E402
from search.config import Settings  # noqa: E402
from search.embed import TransformerEmbedder  # noqa: E402
from search.evaluate import Dataset  # noqa: E402
from search.indexing import prepare  # noqa: E402
from search.records import Staged  # noqa: E402
from search.types import Document  # noqa: E402

SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
NO_LIMIT = 10**9


def indexing_batches(dataset: Dataset, docs: int, per_batch: int) -> list[list[str]]:
    """The embedding inputs of each indexing batch, as the indexer builds them."""
    settings = Settings()
    documents = [d for d in dataset.documents() if isinstance(d, Document)][: docs or None]
    out = []
    for batch in batched(documents, per_batch):
        prepared = [prepare(Staged(doc, 1, True), settings) for doc in batch]
        out.append([text for item in prepared for text in item.embed_inputs])
    return out


def token_counts(embedder: TransformerEmbedder, texts: list[str]) -> list[int]:
    encoded = embedder._tokenizer(texts, truncation=True, max_length=embedder.max_length)
    return [len(ids) for ids in encoded["input_ids"]]


def padded(lengths: list[int], budget: int, cap: int) -> int:
    """Tokens the model runs over, padding included, for one indexing batch."""
    return sum(len(b) * lengths[b[0]] for b in budget_batches(lengths, budget, max_items=cap))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SCIFACT)
    parser.add_argument("--docs", type=int, default=1500, help="first N documents (0: all)")
    parser.add_argument("--docs-per-batch", type=int, default=64)
    parser.add_argument("--runtime", default="onnx")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    batches = indexing_batches(Dataset.open(args.data, "test"), args.docs, args.docs_per_batch)
    configs = {
        "fixed 32": (NO_LIMIT, 32),
        "budget 8192, at most 32": (8192, 32),
        "budget 8192, at most 128": (8192, 128),
        "budget 16384, at most 256": (16384, 256),
    }
    embedders = {
        name: TransformerEmbedder(runtime=args.runtime, batch_size=cap, token_budget=budget)
        for name, (budget, cap) in configs.items()
    }
    for embedder in embedders.values():
        embedder.warm_up()
        embedder.embed(["warm the first batch"])
    seconds = dict.fromkeys(configs, 0.0)
    vectors: dict[str, list[np.ndarray]] = {name: [] for name in configs}
    for texts in batches:
        for name, embedder in embedders.items():
            started = time.perf_counter()
            vectors[name].append(embedder.embed(texts))
            seconds[name] += time.perf_counter() - started
    texts = [t for batch in batches for t in batch]
    lengths = [token_counts(embedders["fixed 32"], batch) for batch in batches]
    real = sum(sum(counts) for counts in lengths)
    base = np.concatenate(vectors["fixed 32"])
    report = {}
    for name, (budget, cap) in configs.items():
        work = sum(padded(counts, budget, cap) for counts in lengths)
        report[name] = {
            "texts_per_s": round(len(texts) / seconds[name], 1),
            "padded_per_real_token": round(work / real, 3),
            "max_abs_diff_vs_fixed": float(np.abs(np.concatenate(vectors[name]) - base).max()),
        }
    fixed = report["fixed 32"]["texts_per_s"]
    print(f"{len(texts)} chunks of {args.docs or 'all'} documents, runtime {args.runtime}")
    print("| batching | chunks/s | x fixed 32 | padded / real tokens | max abs diff |")
    print("|---|---:|---:|---:|---:|")
    for name, row in report.items():
        print(
            f"| {name} | {row['texts_per_s']} | {row['texts_per_s'] / fixed:.2f} | "
            f"{row['padded_per_real_token']} | {row['max_abs_diff_vs_fixed']:.1e} |"
        )
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
