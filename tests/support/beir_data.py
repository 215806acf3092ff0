"""A small generated BEIR folder: corpus.jsonl, queries.jsonl and qrels/<split>.tsv.

Each query names two topic words; its one relevant document is about both,
and a few distractors are about one of them (hard negatives for retrieval to
find). The words come from the tiny tokenizer's training text, so the tiny
model sees real tokens rather than ``<unk>``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = (
    "water heat cook rice pan skillet knife garden soil plant tomato compost bike tyre chain "
    "brake pressure burn sting nosebleed password account router printer storm lightning "
    "flood travel card fee fund safety protein gene patient treatment"
).split()
FILLER = "the a of to and in is for on with that by as it from at this be are or was an".split()


def _sentence(rng: random.Random, words: list[str], n: int) -> str:
    picked = [rng.choice(FILLER) if i % 2 else rng.choice(words) for i in range(n)]
    return " ".join(picked).capitalize() + "."


def write_beir(root: Path, *, n_queries: int = 13, n_docs: int = 30, seed: int = 0) -> Path:
    """Write the folder (qrels in ``train.tsv``; ``test.tsv`` holds the same judgements)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    docs, queries, qrels = [], [], []
    for i in range(n_queries):
        a, b = TOPICS[(2 * i) % len(TOPICS)], TOPICS[(2 * i + 1) % len(TOPICS)]
        queries.append({"_id": f"q{i}", "text": f"{a} {b}"})
        docs.append({"_id": f"d{i}", "title": f"{a} and {b}", "text": _sentence(rng, [a, b], 16)})
        qrels.append((f"q{i}", f"d{i}"))
    for j in range(n_queries, n_docs):
        topic = TOPICS[rng.randrange(len(TOPICS))]
        text = _sentence(rng, [topic, rng.choice(TOPICS)], 16)
        docs.append({"_id": f"d{j}", "title": topic, "text": text})
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    rows = "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels)
    for split in ("train", "test"):
        (root / "qrels" / f"{split}.tsv").write_text(rows)
    return root
