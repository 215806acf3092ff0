"""Warm start: the first query after ``sieve serve`` starts, against the steady state.

Starts ``sieve serve --demo`` (what ``make run`` runs, less the hub check: the sample
corpus indexed into a fresh data directory) on a free port, waits until ``/readyz``
answers 200, then times one search (the first query of ``sample/queries.jsonl``) and
the next ``--steady`` (20) searches, one at a time, each its own query. Reported per
run: seconds from start to ready (indexing the sample included), the first query's
latency and its ``timings_ms["load"]`` (start-up work the query did itself), and the
steady p50 and p95.

Two runs by default: ``SIEVE_WARM_UP=1`` (the default: each worker loads the Chinese
dictionary, the embedder and the reranker before it says ready) and
``SIEVE_WARM_UP=0`` (the first query that needs each part loads it). The reranker is
the tiny random cross-encoder of the tests (``--reranker tiny``, the default), a
model folder (``--reranker PATH``) or none (``--reranker none``); no weights can be
downloaded here, so a real reranker's load time adds to the cold figure.

Run: ``.venv/bin/python bench/warm_start.py [--steady 20] [--reranker tiny|PATH|none]
[--modes 1,0] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support.live_server import sieve_serve  # noqa: E402
from support.tiny_models import build_tiny_reranker  # noqa: E402

from search.evaluate import percentile  # noqa: E402

QUERIES = ROOT / "sample" / "queries.jsonl"


def reranker_env(choice: str, scratch: Path) -> dict[str, str]:
    """The SIEVE_RERANK_* variables for ``--reranker``."""
    if choice == "none":
        return {"SIEVE_RERANK_BACKEND": "none"}
    folder = Path(choice)
    if choice == "tiny":
        folder = scratch / "models" / "tiny-reranker"
        build_tiny_reranker(folder)
    return {
        "SIEVE_RERANK_BACKEND": "local",
        "SIEVE_RERANK_MODEL": folder.name,
        "SIEVE_RERANK_MODELS_DIR": str(folder.parent),
        "SIEVE_RERANK_DEVICE": "cpu",
    }


def run(warm_up: str, queries: list[str], steady: int, rerank: dict[str, str]) -> dict[str, Any]:
    """One start of ``sieve serve --demo``: time to ready, first query, steady state."""
    with tempfile.TemporaryDirectory(prefix="sieve-warm-") as data:
        env = {"SIEVE_DATA_DIR": data, "SIEVE_RATE_LIMIT": "", "SIEVE_WARM_UP": warm_up, **rerank}
        with sieve_serve(env, "--demo") as served:
            started = time.monotonic()
            status, body = served.wait_for("/readyz", deadline_s=600)
            while status != 200:
                assert time.monotonic() - started < 600, body
                answer = served.get("/readyz")
                assert answer is not None, "the server stopped answering"
                status, body = answer
            # From the start of `sieve serve --demo`: indexing the sample is included.
            ready_s = time.monotonic() - started
            latencies, loads, first_timings = [], [], {}
            for query in queries[: steady + 1]:
                t0 = time.perf_counter()
                code, result = served.post("/v1/search", {"query": query, "top_k": 10})
                latencies.append((time.perf_counter() - t0) * 1000)
                assert code == 200, result
                loads.append(result["timings_ms"].get("load", 0.0))
                first_timings = first_timings or result["timings_ms"]
    rest = latencies[1:]
    return {
        "warm_up": warm_up == "1",
        "ready_s": round(ready_s, 2),
        "warm_up_state": body.get("warm_up"),
        "first_ms": round(latencies[0], 1),
        "first_load_ms": round(loads[0], 1),
        "first_timings_ms": first_timings,
        "steady_p50_ms": round(statistics.median(rest), 1),
        "steady_p95_ms": round(percentile(rest, 95), 1),
        "steady_loads": sum(1 for load in loads[1:] if load),
    }


def main() -> None:
    """Parse the arguments, run each mode, print a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steady", type=int, default=20)
    parser.add_argument("--reranker", default="tiny")
    parser.add_argument("--modes", default="1,0", help="SIEVE_WARM_UP values to run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    lines = QUERIES.read_text(encoding="utf-8").splitlines()
    queries = [json.loads(line)["text"] for line in lines if line.strip()]
    while len(queries) < args.steady + 1:
        queries += queries
    with tempfile.TemporaryDirectory(prefix="sieve-warm-models-") as scratch:
        rerank = reranker_env(args.reranker, Path(scratch))
        results = [run(mode, queries, args.steady, rerank) for mode in args.modes.split(",")]
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "reranker": args.reranker,
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(report["machine"], "| reranker:", args.reranker)
    print("warm-up  ready(s)  first(ms)  first load(ms)  steady p50(ms)  p95(ms)")
    for r in results:
        print(
            f"{'on' if r['warm_up'] else 'off':8} {r['ready_s']:8} "
            f"{r['first_ms']:10} {r['first_load_ms']:15} {r['steady_p50_ms']:15} "
            f"{r['steady_p95_ms']:8}"
        )


if __name__ == "__main__":
    main()
