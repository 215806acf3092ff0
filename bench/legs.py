"""Where a hybrid query spends its time: each leg alone and both together, in one run.

Builds (once, then reuses) an index of the first ``--docs`` documents of a BEIR
corpus (SciFact when ``../shared/data/scifact`` is there, else the shipped
sample), then runs every query in ``bm25``, ``vector`` and ``hybrid`` mode in
turn, interleaved so that a busy machine slows every mode alike, and reports
p50/p95 wall time per mode, the query embedding alone, and what hybrid costs
beyond its slower leg. No reranking: this is about the retrieval legs.

Run: ``python bench/legs.py [--data DIR] [--docs 400] [--index DIR] [--json]``.
The engine is imported from ``PYTHONPATH`` first, this tree only when none is set.

Two commits in the same run: ``git worktree add --detach /tmp/old main``, then
``python bench/legs.py --compare /tmp/old .``. Each checkout gets a worker
process over its own copy of one index, and the workers answer each query in
turn (one at a time, so they never compete), so load on the machine falls on
both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
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


class Timer:
    """Times one query in every mode (and the query embedding alone) on one engine."""

    def __init__(self, engine: SearchEngine, modes: list[str], top_k: int) -> None:
        self.calls: dict[str, Callable[[str], object]] = {}
        if "vector" in modes or "hybrid" in modes:
            self.calls["embed_query"] = engine.embedder.embed_query
        for mode in modes:
            request = {"mode": mode, "top_k": top_k, "collection": "legs"}
            self.calls[mode] = lambda q, r=request: engine.search(SearchRequest(query=q, **r))

    def run(self, query: str) -> dict[str, dict[str, float]]:
        """``{name: {"wall": ms, stage: ms, ...}}`` for one query."""
        out: dict[str, dict[str, float]] = {}
        for name, call in self.calls.items():
            t0 = time.perf_counter()
            result = call(query)
            out[name] = {"wall": (time.perf_counter() - t0) * 1000}
            out[name].update(getattr(result, "timings_ms", {}))
        return out


def summarise(samples: list[dict[str, dict[str, float]]]) -> dict:
    """p50/p95 wall time per call, stage p50s per mode, hybrid beyond its slower leg."""
    names = list(samples[0])
    out: dict = {"wall_ms": {}, "stages_p50_ms": {}}
    for name in names:
        walls = [s[name]["wall"] for s in samples]
        out["wall_ms"][name] = {"p50": p(walls, 50), "p95": p(walls, 95)}
        stages = {k for s in samples for k in s[name]} - {"wall"}
        if stages:
            out["stages_p50_ms"][name] = {
                k: round(statistics.median(s[name].get(k, 0.0) for s in samples), 3)
                for k in sorted(stages)
            }
    if set(MODES) <= set(names):
        wall = out["wall_ms"]
        slower = max(wall["bm25"]["p50"], wall["vector"]["p50"])
        out["hybrid_over_slower_leg_ms"] = round(wall["hybrid"]["p50"] - slower, 3)
    return out


def worker(index_dir: Path, modes: list[str], top_k: int) -> int:
    """Answer ``{"query": ...}`` lines on stdin with one timing line each (``--compare``)."""
    settings = Settings.from_env({}).with_overrides(
        data_dir=index_dir, collection="legs", rerank_backend="none"
    )
    with SearchEngine(settings) as engine:
        timer = Timer(engine, modes, top_k)
        print(json.dumps({"engine_from": engine_from()}), flush=True)
        for line in sys.stdin:
            print(json.dumps(timer.run(json.loads(line)["query"])), flush=True)
    return 0


def engine_from() -> str:
    """The checkout the engine was imported from."""
    return str(Path(search.__file__).resolve().parent.parent)


def compare(
    checkouts: list[Path], index_dir: Path, queries: list[str], modes: list[str], top_k: int
) -> dict[str, dict]:
    """One worker per checkout, each over its own copy of the index, asked in lockstep."""
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for n, checkout in enumerate(checkouts):
            copy = index_dir.parent / f"{index_dir.name}-worker{n}"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(index_dir, copy)
            env = dict(os.environ, PYTHONPATH=str(checkout.resolve()))
            cmd = [sys.executable, __file__, "--worker", "--index", str(copy), "--top-k"]
            cmd += [str(top_k), "--modes", ",".join(modes)]
            label = f"{n}:{checkout}"
            procs[label] = subprocess.Popen(
                cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
        origin = {
            label: json.loads(_ask(proc, None))["engine_from"] for label, proc in procs.items()
        }
        samples: dict[str, list[dict]] = {label: [] for label in procs}
        for i, query in enumerate([queries[0], *queries]):
            for label, proc in procs.items():
                answer = json.loads(_ask(proc, query))
                if i:  # the first is a warm-up
                    samples[label].append(answer)
        return {
            label: {"engine_from": origin[label], **summarise(samples[label])} for label in procs
        }
    finally:
        for proc in procs.values():
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=60)


def _ask(proc: subprocess.Popen[str], query: str | None) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    if query is not None:
        proc.stdin.write(json.dumps({"query": query}) + "\n")
        proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"error: a worker exited early (rc {proc.wait()})")
    return line


def print_report(report: dict) -> None:
    """The human-readable form of one checkout's figures."""
    print(f"engine from {report['engine_from']}")
    for name, row in report["wall_ms"].items():
        print(f"  {name:<12} p50 {row['p50']:8.3f} ms   p95 {row['p95']:8.3f} ms")
    if "hybrid_over_slower_leg_ms" in report:
        print(f"  hybrid beyond its slower leg: {report['hybrid_over_slower_leg_ms']:.3f} ms")
    for mode, by_stage in report["stages_p50_ms"].items():
        print(f"  {mode} stages p50: " + ", ".join(f"{k} {v}" for k, v in by_stage.items()))


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
    parser.add_argument(
        "--compare", nargs="+", type=Path, metavar="CHECKOUT", help="checkouts to time in turn"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the JSON report only")
    args = parser.parse_args(argv)
    if args.docs < 1 or args.queries < 1 or args.rounds < 1 or args.top_k < 1:
        parser.error("--docs, --queries, --rounds and --top-k must be at least 1")
    modes = args.modes.split(",")
    if any(m not in MODES for m in modes):
        parser.error(f"--modes: choose from {', '.join(MODES)}")
    if args.worker:
        return worker(args.index, modes, args.top_k)
    folder = corpus_dir(args.data)
    queries = load_queries(folder, args.queries) * args.rounds
    with tempfile.TemporaryDirectory() as tmp:
        index_dir = args.index or Path(tmp) / "index"
        with open_engine(folder, index_dir, args.docs) as engine:
            if not args.compare:
                timer = Timer(engine, modes, args.top_k)
                timer.run(queries[0])  # warm-up: model load, index open, caches
                samples = [timer.run(q) for q in queries]
                reports = {"0": {"engine_from": engine_from(), **summarise(samples)}}
        if args.compare:
            reports = compare(args.compare, index_dir, queries, modes, args.top_k)
    meta = {"corpus": folder.name, "docs": args.docs, "queries": len(queries), "top_k": args.top_k}
    if args.json:
        print(json.dumps({**meta, "runs": reports}, indent=2))
        return 0
    print(", ".join(f"{k} {v}" for k, v in meta.items()))
    for report in reports.values():
        print_report(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
