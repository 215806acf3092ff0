"""BM25 alone on a BEIR folder: the analyser and tantivy, no embedder, no vector index.

Documents go through the indexing path's own ``prepare`` (cleaning, chunking,
analysis) into a tantivy index in a temporary folder; queries through the
query path's analyser, each document scored by its best chunk. This is the
quick check of an analyser change (Chinese stop words, for example) on a set
such as cmrc2018-zh, where building vectors would only cost time.

Run: ``python bench/bm25_only.py DATASET_DIR [--split test] [--show Q1,Q2]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.config import Settings  # noqa: E402
from search.errors import LoadError  # noqa: E402
from search.evaluate import Dataset, metrics  # noqa: E402
from search.indexing import prepare  # noqa: E402
from search.keyword.tantivy_index import TantivyKeywordIndex  # noqa: E402
from search.pipeline import collapse  # noqa: E402
from search.records import Staged  # noqa: E402
from search.text import analyze  # noqa: E402

DEPTH = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--show", default="", help="comma-separated query ids: print their top 3")
    args = parser.parse_args()
    dataset = Dataset.open(args.dataset, args.split)
    settings = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        index = TantivyKeywordIndex(Path(tmp) / "tantivy")
        batch = []
        for doc in dataset.documents():
            if isinstance(doc, LoadError):
                raise doc
            batch.append(prepare(Staged(doc, 1, True), settings))
        index.upsert([c for p in batch for c in p.chunks], [t for p in batch for t in p.tokens])
        qrels, queries = dataset.judged()
        run = {}
        for qid, text in queries.items():
            hits = collapse(index.search(analyze(text), DEPTH))
            run[qid] = [h.doc_id for h in hits]
        index.close()
    report = {k: round(v, 4) for k, v in metrics(qrels, run).items()}
    report |= {"queries": len(queries), "set": dataset.name, "split": args.split}
    print(json.dumps(report))
    for qid in filter(None, args.show.split(",")):
        print(qid, queries[qid], analyze(queries[qid]), run[qid][:3], qrels[qid])


if __name__ == "__main__":
    main()
