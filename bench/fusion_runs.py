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
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.config import Settings  # noqa: E402
from search.engine import SearchEngine  # noqa: E402
from search.evaluate import Dataset, prepare_index  # noqa: E402
from search.types import SearchRequest  # noqa: E402

DEPTH = 100


def leg(engine: SearchEngine, text: str, mode: str) -> list[tuple[str, float]]:
    """One leg's documents, best first (a skipped or empty leg gives an empty list)."""
    result = engine.search(SearchRequest(query=text, mode=mode, top_k=DEPTH, collection="eval"))  # type: ignore[arg-type]
    return [(h.doc_id, h.score) for h in result.hits]


def dump(settings: Settings, root: str, splits: list[str], out: Path) -> None:
    first = Dataset.open(root, splits[0])
    eval_settings = prepare_index(settings, first)
    with SearchEngine(eval_settings) as engine:
        for split in splits:
            ds = Dataset.open(root, split)
            qrels, queries = ds.judged()
            # A blank query is refused by the API; sieve eval scores it 0 (no run).
            queries = {qid: text for qid, text in queries.items() if text.strip()}
            legs = {
                qid: {
                    "bm25": leg(engine, text, "bm25"),
                    "vector": leg(engine, text, "vector"),
                    # Hybrid skips the vector leg where the embedder does not serve the
                    # query's script (search.embed_languages): fusion never sees it.
                    "skips_vector": "vector"
                    in engine.search(SearchRequest(query=text, top_k=1, collection="eval")).skipped,
                }
                for qid, text in queries.items()
            }
            path = out / f"{ds.name}-{split}.json"
            path.write_text(
                json.dumps(
                    {
                        "set": ds.name,
                        "split": split,
                        "qrels": qrels,
                        "queries": queries,
                        "legs": legs,
                    }
                )
            )
            print(f"{path}: {len(queries)} queries", flush=True)


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
