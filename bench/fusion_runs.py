"""Each retrieval leg's ranked candidates for every judged query of several data sets.

Fusion is a pure function of the two legs' ranked ``(doc id, score)`` lists,
so every fusion method can be compared offline once those lists exist. This
command indexes each data set (reusing ``sieve eval``'s cached index), runs
the BM25 and vector legs once per query to depth 100 and writes one JSON file
per (set, split) under ``--out``: the qrels, the query text, both legs, and
whether hybrid search skips the vector leg for the query.
``bench/fusion.py`` reads them.

Run: ``SIEVE_DATA_DIR=data .venv/bin/python bench/fusion_runs.py \
    ../shared/data/scifact:train,test ../shared/data/cranfield:test sample:test``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.config import Settings  # noqa: E402
from search.engine import SearchEngine  # noqa: E402
from search.evaluate import Dataset, prepare_index  # noqa: E402
from search.fusion_tuning import judged_legs  # noqa: E402


def dump(settings: Settings, root: str, splits: list[str], out: Path) -> None:
    first = Dataset.open(root, splits[0])
    eval_settings = prepare_index(settings, first)
    with SearchEngine(eval_settings) as engine:
        for split in splits:
            ds = Dataset.open(root, split)
            qrels, queries = ds.judged()
            # The legs ``sieve tune`` scores, with hybrid's skip of the vector leg
            # (search.fusion_tuning.judged_legs); blank queries are left out.
            judged = judged_legs(engine, queries, "eval")
            legs = {qid: dataclasses.asdict(q) for qid, q in judged.items()}
            data = {"set": ds.name, "split": split, "qrels": qrels, "queries": queries}
            path = out / f"{ds.name}-{split}.json"
            path.write_text(json.dumps({**data, "legs": legs}))
            print(f"{path}: {len(judged)} queries", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", help="DATASET_DIR:split[,split...]")
    parser.add_argument("--out", default="data/fusion-runs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env()
    for spec in args.sets:
        root, _, splits = spec.partition(":")
        dump(settings, root, (splits or "test").split(","), out)


if __name__ == "__main__":
    main()
