"""What the plumbing around the model costs: the warm pair cache and the Celery round trip.

1. Warm cache: a top-50 rerank repeated through ``CachingReranker`` with an
   in-process LRU and with a real ``redis-server`` (started on a free port):
   time spent in the cache (``timings_ms["cache"]``) and whether the model ran.
2. Celery round trip: ``CeleryReranker`` against a real worker process (prefork,
   concurrency 1) on a real Redis broker, scoring with a small random
   cross-encoder; overhead = round trip - model time, p50/p90. Two ways: the
   passages sent as text, and sent as references (collection, chunk id, digest:
   what the pipeline sends for indexed hits) that the worker reads from a tantivy
   index in its data directory (``workers.passages``); ``read`` is that read.

Run: ``.venv/bin/python bench/rerank_paths.py [--calls 300] [--json]`` (needs ``redis-server``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support.celery_worker import start_worker  # noqa: E402
from support.redis_server import RedisServer  # noqa: E402
from support.tiny_models import build_tiny_reranker  # noqa: E402

from search.rerank import CachingReranker, CrossEncoderReranker  # noqa: E402
from search.scores import LruScoreStore, RedisScoreStore  # noqa: E402


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def passages(n: int = 50) -> list[str]:
    words = "cell protein gene expression tumour immune response signal pathway mouse".split()
    return [" ".join(words[(i + j) % len(words)] for j in range(180)) + f" {i}" for i in range(n)]


def warm_cache(reranker, store, calls: int) -> dict:
    cached = CachingReranker(reranker, store, ttl_s=600)
    docs = passages()
    cached.rerank("protein signalling in tumour cells", docs)  # fills the cache
    cache_ms, model_runs = [], 0
    for _ in range(calls):
        batch = cached.rerank("protein signalling in tumour cells", docs)
        cache_ms.append(batch.timings_ms.get("cache", 0.0))
        model_runs += "model" in batch.timings_ms
    return {
        "cache_p50_ms": round(pct(cache_ms, 50), 3),
        "cache_p99_ms": round(pct(cache_ms, 99), 3),
        "calls_that_ran_the_model": model_runs,
    }


def index_refs(settings, docs: list[str]) -> list:
    """Write ``docs`` as chunks of collection ``bench`` (untitled); their references."""
    from search.keyword import open_keyword_index
    from search.passages import passage_ref
    from search.text import analyze
    from search.types import Chunk

    chunks = [
        Chunk(id=f"bench-{i}", doc_id=f"d{i}", ordinal=0, text=t, start=0, end=len(t))
        for i, t in enumerate(docs)
    ]
    index = open_keyword_index(settings, "bench")
    try:
        index.upsert(chunks, [analyze(c.text) for c in chunks])
    finally:
        index.close()  # the worker only reads
    return [passage_ref("bench", c.id, c.text) for c in chunks]


def celery_round_trip(
    model_dir: Path, redis: RedisServer, calls: int, log: Path, data_dir: Path
) -> dict:
    from workers.app import celery_init_app
    from workers.client import CeleryReranker

    env = {
        "SIEVE_RERANK_MODEL": str(model_dir),
        "SIEVE_RERANK_TIMEOUT_S": "10",
        "SIEVE_DATA_DIR": str(data_dir),
    }
    worker = start_worker(f"{redis.url.rsplit('/', 1)[0]}/5", log, env=env)
    try:
        app = celery_init_app(worker.settings, worker.workers)
        client = CeleryReranker(app, worker.settings, worker.workers)
        out = {}
        for n in (1, 50):
            docs = passages(n)
            refs = index_refs(worker.settings, docs)
            for mode in ("text", "refs"):
                sent = {"refs": refs} if mode == "refs" else {}
                client.rerank("warm up", docs, **sent)
                overhead, queue, read = [], [], []
                for _ in range(calls):
                    t0 = time.perf_counter()
                    batch = client.rerank("protein signalling in tumour cells", docs, **sent)
                    total = (time.perf_counter() - t0) * 1000
                    overhead.append(total - batch.timings_ms.get("model", 0.0))
                    queue.append(batch.timings_ms.get("queue", 0.0))
                    read.append(batch.timings_ms.get("read", 0.0))
                out[f"{n}_passages_{mode}"] = {
                    "overhead_p50_ms": round(pct(overhead, 50), 2),
                    "overhead_p90_ms": round(pct(overhead, 90), 2),
                    "queue_p50_ms": round(pct(queue, 50), 2),
                    "read_p50_ms": round(pct(read, 50), 2),
                }
        return out
    finally:
        worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_reranker(Path(tmp) / "model", hidden=128, layers=2)
        reranker = CrossEncoderReranker(str(model_dir), device="cpu")
        redis = RedisServer()
        redis.start()
        try:
            report = {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": f"{platform.node()} ({platform.processor() or platform.machine()})",
                "warm_cache_lru": warm_cache(reranker, LruScoreStore(10_000), args.calls),
                "warm_cache_redis": warm_cache(
                    reranker, RedisScoreStore(redis.url, 0.05), args.calls
                ),
                "celery": celery_round_trip(
                    model_dir, redis, args.calls, Path(tmp) / "worker.log", Path(tmp) / "data"
                ),
            }
        finally:
            redis.stop()
            redis.cleanup()
    print(f"# rerank paths, {report['date']}, {report['machine']}")
    for name in ("warm_cache_lru", "warm_cache_redis"):
        r = report[name]
        print(
            f"{name}: top-50 cache p50 {r['cache_p50_ms']} ms, p99 {r['cache_p99_ms']} ms, "
            f"model ran in {r['calls_that_ran_the_model']} of {args.calls} calls"
        )
    for n, r in report["celery"].items():
        print(
            f"celery {n}: overhead beyond model p50 {r['overhead_p50_ms']} ms, "
            f"p90 {r['overhead_p90_ms']} ms (queue p50 {r['queue_p50_ms']} ms, "
            f"worker read p50 {r['read_p50_ms']} ms)"
        )
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
