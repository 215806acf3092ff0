"""Searches beside a hostile request: latency of ordinary searches while 5 MB documents
are sent to /v1/rerank, against the same searches alone, in the same run.

The app is built as `sieve serve` builds it (in-process reranker bounded by
SIEVE_RERANK_TIMEOUT_S) over the sample corpus, and driven through Flask's test
client in threads: one thread keeps posting a 5 MB document to /v1/rerank while
the main thread sends reranked searches. The promise (docs/reliability.md): a
search answers within its rerank deadline plus 100 ms, whatever the other request.

Run: ``.venv/bin/python bench/faults.py [--searches 40] [--timeout-s 2] [--reranker tiny|PATH]
[--json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from api.app import create_app  # noqa: E402
from api.settings import ApiSettings, ServiceSettings  # noqa: E402
from search.config import Settings  # noqa: E402
from search.engine import SearchEngine  # noqa: E402
from search.evaluate import percentile  # noqa: E402
from search.ingest import iter_paths  # noqa: E402
from search.types import Document  # noqa: E402

QUERIES = ["flat tire bike", "storm safety", "cast iron pan", "descale a kettle", "nosebleed"]
HUGE = "check the tyre pressure before a long ride " * 120_000  # 5.2 MB


def searches(client: Any, n: int) -> list[float]:
    """Seconds per reranked search, ``n`` of them."""
    out = []
    for i in range(n):
        started = time.perf_counter()
        response = client.post("/v1/search", json={"query": QUERIES[i % len(QUERIES)]})
        out.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"search answered {response.status_code}: {response.json}")
    return out


def summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "max_ms": max(ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--searches", type=int, default=40)
    parser.add_argument("--timeout-s", type=float, default=2.0, help="SIEVE_RERANK_TIMEOUT_S")
    parser.add_argument("--reranker", default="tiny", help="'tiny' (built here) or a model folder")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sieve-faults-") as scratch:
        if args.reranker == "tiny":
            from support.tiny_models import build_tiny_reranker

            folder = build_tiny_reranker(Path(scratch) / "models" / "tiny-reranker")
        else:
            folder = Path(args.reranker).resolve()
        settings = Settings.from_env({}).with_overrides(
            data_dir=Path(scratch) / "data",
            rerank_backend="local",
            rerank_model=folder.name,
            rerank_models_dir=folder.parent,
            rerank_timeout_s=args.timeout_s,
        )
        engine = SearchEngine(settings)
        docs = [
            d for d in iter_paths([ROOT / "sample" / "corpus.jsonl"]) if isinstance(d, Document)
        ]
        engine.index(docs)
        app = create_app(ServiceSettings(engine=settings, api=ApiSettings(rate_limit="")), engine)
        client = app.test_client()
        searches(client, 5)  # warm: model loads, caches fill as in steady state
        alone = searches(client, args.searches)

        stop = threading.Event()
        statuses: list[int] = []

        def hostile() -> None:
            other = app.test_client()
            while not stop.is_set():
                body = {"query": "tyre pressure", "documents": [HUGE]}
                statuses.append(other.post("/v1/rerank", json=body).status_code)

        thread = threading.Thread(target=hostile)
        thread.start()
        try:
            beside = searches(client, args.searches)
        finally:
            stop.set()
            thread.join(120)
        engine.close()

    result = {
        "rerank_timeout_s": args.timeout_s,
        "alone": summary(alone),
        "beside_5mb_rerank": summary(beside),
        "huge_reranks": {"sent": len(statuses), "ok": statuses.count(200)},
        "reranker": args.reranker,
    }
    bound_ms = args.timeout_s * 1000 + 100
    print(f"rerank deadline {args.timeout_s:g} s; promise: every search <= {bound_ms:.0f} ms")
    for name in ("alone", "beside_5mb_rerank"):
        row = result[name]
        print(
            f"  {name:>18}: p50 {row['p50_ms']:.1f} ms, p95 {row['p95_ms']:.1f} ms, "
            f"max {row['max_ms']:.1f} ms"
        )
    print(f"  5 MB reranks answered 200: {statuses.count(200)} of {len(statuses)}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
