"""Where a hybrid query spends its time: each leg alone and both together, in one run.

Builds (once, then reuses) an index of the first ``--docs`` documents of a BEIR
corpus (SciFact when ``../shared/data/scifact`` is there, else the shipped
sample), then runs every query in ``bm25``, ``vector`` and ``hybrid`` mode in
turn, interleaved so that a busy machine slows every mode alike, and reports
p50/p95 wall time per mode, the query embedding alone, and what hybrid costs
beyond its slower leg. No reranking: this is about the retrieval legs.

Run: ``python bench/legs.py [--data DIR] [--docs 400] [--index DIR] [--json]``.
To compare two commits, point ``PYTHONPATH`` at the other checkout: the engine
is imported from ``PYTHONPATH`` first, this tree only when none is set.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # after PYTHONPATH, so another checkout can be measured

import search  # noqa: E402
from search.config import Settings  # noqa: E402
from search.engine import SearchEngine  # noqa: E402
from search.ingest import iter_jsonl  # noqa: E402
from search.types import Document, SearchRequest  # noqa: E402

SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
SAMPLE = ROOT / "sample"
MODES = ("bm25", "vector", "hybrid")


def corpus_dir(given: Path | None) -> Path:
    """The corpus folder: the one given, else SciFact when present, else the sample."""
    if given is not None:
        if not (given / "corpus.jsonl").is_file():
            raise SystemExit(f"error: {given}/corpus.jsonl not found")
        return given
    return SCIFACT if (SCIFACT / "corpus.jsonl").is_file() else SAMPLE


def load_queries(folder: Path, limit: int) -> list[str]:
    """The first ``limit`` query texts of ``folder/queries.jsonl``."""
    with (folder / "queries.jsonl").open(encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle if line.strip()]
    return texts[:limit]


def open_engine(folder: Path, index_dir: Path, n_docs: int) -> SearchEngine:
    """An engine over ``index_dir``, indexing the corpus there first unless already done."""
    settings = Settings.from_env({}).with_overrides(
        data_dir=index_dir, collection="legs", rerank_backend="none"
    )
    engine = SearchEngine(settings)
    marker = index_dir / "legs-corpus.json"
    wanted = {"corpus": str(folder.resolve()), "docs": n_docs}
    if not marker.is_file() or json.loads(marker.read_text()) != wanted:
        docs = [d for d in islice(iter_jsonl(folder / "corpus.jsonl"), n_docs)]
        docs = [d for d in docs if isinstance(d, Document)]
        t0 = time.perf_counter()
        report = engine.index(docs, batch_size=64)
        if report.failed:
            raise SystemExit(f"error: {len(report.failed)} documents failed to index")
        print(f"indexed {len(docs)} documents in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        marker.write_text(json.dumps(wanted))
    return engine


def p(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (ms), rounded for the report."""
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(pct / 100 * len(ordered)))], 3)


def measure(
    engine: SearchEngine, queries: list[str], top_k: int, rounds: int, modes: list[str]
) -> dict:
    """Wall time per mode and per reported stage, every query in every mode in turn."""
    calls: dict[str, Callable[[str], object]] = {}
    if "vector" in modes or "hybrid" in modes:
        calls["embed_query"] = engine.embedder.embed_query
    wall: dict[str, list[float]] = {m: [] for m in (*calls, *modes)}
    stages: dict[str, dict[str, list[float]]] = {m: {} for m in modes}
    for mode in modes:
        calls[mode] = lambda q, mode=mode: engine.search(
            SearchRequest(query=q, mode=mode, top_k=top_k, collection="legs")  # type: ignore[arg-type]
        )
    for call in calls.values():  # warm-up: model load, index open, caches
        call(queries[0])
    for _ in range(rounds):
        for q in queries:
            for name, call in calls.items():
                t0 = time.perf_counter()
                result = call(q)
                wall[name].append((time.perf_counter() - t0) * 1000)
                if name in stages:
                    for stage, ms in result.timings_ms.items():  # type: ignore[attr-defined]
                        stages[name].setdefault(stage, []).append(ms)
    out: dict = {"wall_ms": {}, "stages_p50_ms": {}}
    for name, values in wall.items():
        out["wall_ms"][name] = {"p50": p(values, 50), "p95": p(values, 95)}
    for mode, by_stage in stages.items():
        out["stages_p50_ms"][mode] = {
            s: round(statistics.median(v), 3) for s, v in by_stage.items()
        }
    if set(MODES) <= set(modes):
        slower = max(out["wall_ms"]["bm25"]["p50"], out["wall_ms"]["vector"]["p50"])
        out["hybrid_over_slower_leg_ms"] = round(out["wall_ms"]["hybrid"]["p50"] - slower, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="BEIR folder (corpus.jsonl, queries.jsonl)")
    parser.add_argument("--docs", type=int, default=400, help="documents to index (default 400)")
    parser.add_argument("--queries", type=int, default=200, help="queries per round")
    parser.add_argument("--rounds", type=int, default=1, help="passes over the queries")
    parser.add_argument("--top-k", type=int, default=10, help="hits per page (default 10)")
    parser.add_argument("--index", type=Path, help="index folder to build or reuse (default: tmp)")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated modes (default: all three)"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report only")
    args = parser.parse_args(argv)
    if args.docs < 1 or args.queries < 1 or args.rounds < 1 or args.top_k < 1:
        parser.error("--docs, --queries, --rounds and --top-k must be at least 1")
    modes = args.modes.split(",")
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes: choose from {', '.join(MODES)}")
    folder = corpus_dir(args.data)
    queries = load_queries(folder, args.queries)
    with tempfile.TemporaryDirectory() as tmp:
        index_dir = args.index or Path(tmp)
        with open_engine(folder, index_dir, args.docs) as engine:
            report = measure(engine, queries, args.top_k, args.rounds, modes)
    report.update(
        engine_from=str(Path(search.__file__).resolve().parent.parent),
        corpus=folder.name,
        docs=args.docs,
        queries=len(queries) * args.rounds,
        top_k=args.top_k,
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"engine from {report['engine_from']}; {folder.name}, {args.docs} docs, "
        f"{report['queries']} queries, top_k {args.top_k}"
    )
    for name, row in report["wall_ms"].items():
        print(f"  {name:<12} p50 {row['p50']:8.3f} ms   p95 {row['p95']:8.3f} ms")
    if "hybrid_over_slower_leg_ms" in report:
        print(f"  hybrid beyond its slower leg: {report['hybrid_over_slower_leg_ms']:.3f} ms")
    for mode, by_stage in report["stages_p50_ms"].items():
        print(f"  {mode} stages p50: " + ", ".join(f"{k} {v}" for k, v in by_stage.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
