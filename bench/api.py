"""HTTP API speed: POST /v1/search under gunicorn against the same calls made in-process.

For each configuration (rerank off; rerank on with every pair score cached; 1, 8 and 32
concurrent clients) it sends ``--requests`` searches (``--queries`` SciFact test queries,
cycled) to the server and reports requests/s and latency p50/p95/p99; right after, it makes
the very same ``engine.search`` calls in this process (each request built as the view
builds it, with ``api.paging.engine_request``) at the same concurrency. HTTP overhead = HTTP p50
minus in-process p50: the Flask app, request validation, snippets, JSON, gunicorn and the
loopback network together. Target: under 3 ms at p50. The two halves of each comparison
run back to back because the load of a shared machine drifts over minutes.

The server is ``sieve serve`` (gunicorn, gthread, one worker: the embedded indexes admit
one process per folder) run as a subprocess on a free port with ``--threads`` threads
(default: the most clients, so no request waits for a thread). The in-process engine
works on a copy of the index folder, for the same reason. Each client thread has its own
``httpx.Client`` (keep-alive) and posts pre-encoded bodies; it reads each answer but does
not decode it. "Rerank on" is measured cached: one untimed pass over the queries first
fills the pair-score cache (in-process LRU) of the side measured.

Run: ``.venv/bin/python bench/api.py [--data DIR] [--data-dir DIR] [--requests 300]
[--queries 100] [--clients 1,8,32] [--reranker tiny|PATH] [--json]``. The SciFact index is
built in (or reused from) ``<data-dir>/eval/scifact`` by ``search.evaluate.prepare_index``;
building it embeds the whole corpus (about 20 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from api.paging import CursorSigner, engine_request  # noqa: E402
from api.schemas import SearchBody  # noqa: E402
from search.config import Settings  # noqa: E402
from search.engine import SearchEngine  # noqa: E402
from search.evaluate import Dataset, percentile, prepare_index  # noqa: E402
from search.types import SearchRequest  # noqa: E402

TOP_K = 10
# The engine's own time in a search answer: "timings_ms": {..., "total": 12.3, ...}.
ENGINE_TOTAL = re.compile(rb'"timings_ms":\{[^{}]*"total":([0-9.eE+-]+)')
STARTUP_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Row:
    """One measured configuration."""

    path: str  # "http" or "in-process"
    rerank: bool
    clients: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    # Per request: latency minus the engine's own ``timings_ms.total`` (reported by the
    # server in its answer, or read from the result in-process), p50. The engine's time
    # cancels out, so this is the HTTP layer's cost measured on the same request.
    outside_p50_ms: float


@dataclass
class Load:
    """What one run of calls measured."""

    latencies: list[float] = field(default_factory=list)  # ms, successful calls
    outside: list[float] = field(default_factory=list)  # ms, latency minus engine time
    errors: int = 0
    wall_s: float = 0.0


Call = Callable[[int, int], float]  # (worker, request index) -> the engine's own ms


def run_load(clients: int, count: int, call: Call) -> Load:
    """``count`` calls ``call(worker, i)`` spread over ``clients`` threads, each as fast
    as it can."""
    load = Load()
    lock = threading.Lock()
    next_index = iter(range(count))
    start = threading.Barrier(clients + 1)

    def worker(number: int) -> None:
        start.wait()
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            began = time.perf_counter()
            try:
                engine_ms = call(number, i)
            except Exception as exc:  # noqa: BLE001 - counted and shown, the run goes on
                with lock:
                    load.errors += 1
                    if load.errors <= 3:
                        print(f"  error: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            elapsed = (time.perf_counter() - began) * 1000
            with lock:
                load.latencies.append(elapsed)
                load.outside.append(elapsed - engine_ms)

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    load.wall_s = time.perf_counter() - began
    return load


def summarise(path: str, rerank: bool, clients: int, load: Load) -> Row:
    """One row of the table."""
    done = len(load.latencies)
    return Row(
        path=path,
        rerank=rerank,
        clients=clients,
        requests=done + load.errors,
        errors=load.errors,
        rps=round(done / load.wall_s, 1) if load.wall_s > 0 else 0.0,
        p50_ms=round(percentile(load.latencies, 50), 2),
        p95_ms=round(percentile(load.latencies, 95), 2),
        p99_ms=round(percentile(load.latencies, 99), 2),
        outside_p50_ms=round(percentile(load.outside, 50), 2),
    )


def bodies(queries: list[str], rerank: bool) -> list[dict[str, Any]]:
    """The request bodies, one per query (the same ones both sides send)."""
    return [{"query": q, "top_k": TOP_K, "collection": "eval", "rerank": rerank} for q in queries]


# -- the server side --------------------------------------------------------------


T0 = time.perf_counter()


def note(message: str) -> None:
    """Progress on stderr, with the seconds since start."""
    print(f"[{time.perf_counter() - T0:6.1f} s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(settings: Settings) -> dict[str, str]:
    """The environment that makes ``sieve serve`` use exactly ``settings``' index and reranker."""
    env = dict(os.environ)
    env.update(
        {
            "SIEVE_DATA_DIR": str(settings.data_dir),
            "SIEVE_COLLECTION": settings.collection,
            "SIEVE_REGISTRY_URL": settings.registry_url,
            "SIEVE_KEYWORD_BACKEND": settings.keyword_backend,
            "SIEVE_VECTOR_BACKEND": settings.vector_backend,
            "SIEVE_RERANK_BACKEND": settings.rerank_backend,
            "SIEVE_RERANK_MODEL": settings.rerank_model,
            "SIEVE_RERANK_MODELS_DIR": str(settings.rerank_models_dir),
            "SIEVE_CACHE_URL": settings.cache_url,
            "SIEVE_RATE_LIMIT": "",  # the bench is the only client; 600/minute would 429 it
            "SIEVE_API_KEYS": "",  # open, so bound to 127.0.0.1 only
        }
    )
    return env


class Server:
    """``python -m api serve`` in a subprocess; logs go to a file shown on failure."""

    def __init__(self, settings: Settings, threads: int, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [sys.executable, "-m", "api", "serve", "--port", str(self.port)]
        command += ["--threads", str(threads), "--workers", "1"]
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=server_env(settings), stdout=self._log, stderr=self._log
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                try:
                    if client.get(self.url + "/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.25)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-3000:]
        sys.exit(f"error: the server did not come up on {self.url}; its log:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # gunicorn: graceful shutdown
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def http_calls(pool: list[httpx.Client], queries: list[str], rerank: bool) -> Call:
    """``call(worker, i)``: POST query ``i`` with worker ``worker``'s keep-alive connection."""
    encoded = [json.dumps(b).encode() for b in bodies(queries, rerank)]

    def post(worker: int, i: int) -> float:
        response = pool[worker].post("/v1/search", content=encoded[i % len(encoded)])
        content = response.read()
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        # Byte searches, not a decode: was it reranked (not degraded), and the engine's time.
        if rerank and b'"reranked":true' not in content:
            raise RuntimeError("not reranked: " + content[:200].decode(errors="replace"))
        found = ENGINE_TOTAL.search(content)
        if found is None:
            raise RuntimeError("no timings_ms.total in the answer")
        return float(found.group(1))

    return post


# -- the same calls in-process ------------------------------------------------------


def local_calls(engine: SearchEngine, queries: list[str], rerank: bool) -> Call:
    """``call(worker, i)``: ``engine.search`` of the request the view would build for query i."""
    signer = CursorSigner("bench")
    requests: list[SearchRequest] = []
    for raw in bodies(queries, rerank):
        body = SearchBody.model_validate(raw)
        # The view's own request (api.paging.engine_request), page 1.
        requests.append(engine_request(body, signer))

    def search(worker: int, i: int) -> float:
        result = engine.search(requests[i % len(requests)])
        if rerank and not result.reranked:
            raise RuntimeError(f"not reranked: degraded={result.degraded}")
        return result.timings_ms["total"]

    return search


def bench(
    server_settings: Settings,
    local_settings: Settings,
    queries: list[str],
    args: argparse.Namespace,
    log_path: Path,
) -> list[Row]:
    """Every configuration, HTTP then in-process back to back, so that both halves of a
    comparison see the same machine (a shared VM's load drifts over minutes)."""
    rows: list[Row] = []
    top = max(args.clients)
    server = Server(server_settings, args.threads, log_path)
    pool = [
        httpx.Client(
            base_url=server.url,
            timeout=60.0,
            headers={"Content-Type": "application/json"},
            limits=httpx.Limits(max_keepalive_connections=1, max_connections=1),
        )
        for _ in range(top)
    ]
    try:
        server.wait_ready()
        note(f"server up on {server.url}")
        with SearchEngine(local_settings) as engine:
            for rerank in (False, True):
                sides = {
                    "http": http_calls(pool, queries, rerank),
                    "in-process": local_calls(engine, queries, rerank),
                }
                for path, call in sides.items():
                    # Untimed: load the models, open the connections, and with rerank on,
                    # score every pair of every query once so the timed runs are cached.
                    warm = len(queries) if rerank else min(len(queries), 2 * top)
                    run_load(min(8, top), warm, call)
                    run_load(top, top, call)
                    note(f"{path}: warmed with {warm} queries, rerank {rerank}")
                for clients in args.clients:
                    for path, call in sides.items():
                        rows.append(
                            summarise(path, rerank, clients, run_load(clients, args.requests, call))
                        )
                        note(str(rows[-1]))
    finally:
        for client in pool:
            client.close()
        server.stop()
    return rows


# -- setup and report -------------------------------------------------------------------


def reranker_folder(spec: str, scratch: Path) -> Path:
    """``tiny``: a small random cross-encoder built here; otherwise a local model folder."""
    if spec != "tiny":
        folder = Path(spec).resolve()
        if not (folder / "config.json").is_file():
            sys.exit(f"error: --reranker {spec}: no config.json in that folder")
        return folder
    from support.tiny_models import build_tiny_reranker

    return build_tiny_reranker(scratch / "models" / "tiny-reranker")


def overheads(rows: list[Row]) -> list[dict[str, Any]]:
    """HTTP minus in-process, per configuration."""
    by = {(r.path, r.rerank, r.clients): r for r in rows}
    out = []
    for (path, rerank, clients), http in by.items():
        local = by.get(("in-process", rerank, clients))
        if path != "http" or local is None:
            continue
        out.append(
            {
                "rerank": rerank,
                "clients": clients,
                "p50_added_ms": round(http.p50_ms - local.p50_ms, 2),
                "p95_added_ms": round(http.p95_ms - local.p95_ms, 2),
                "rps_ratio": round(http.rps / local.rps, 3) if local.rps else None,
                # The paired measure: the same requests' time outside the engine.
                "outside_engine_p50_ms": http.outside_p50_ms,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    parser.add_argument(
        "--data-dir", type=Path, help="where eval/scifact is built or reused (SIEVE_DATA_DIR)"
    )
    parser.add_argument("--requests", type=int, default=300, help="timed requests per config")
    parser.add_argument(
        "--queries", type=int, default=100, help="distinct test queries, cycled (default 100)"
    )
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels, comma-separated")
    parser.add_argument("--threads", type=int, help="gunicorn threads (default: most clients)")
    parser.add_argument("--reranker", default="tiny", help="'tiny' (built here) or a model folder")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    if min(args.requests, args.queries, *args.clients) < 1:
        sys.exit("error: --requests, --queries and every --clients level must be >= 1")
    args.threads = args.threads or max(args.clients)

    settings = Settings.from_env()
    if args.data_dir is not None:
        settings = settings.with_overrides(data_dir=args.data_dir.resolve())
    dataset = Dataset.open(args.data, "test")
    note(f"index: {settings.data_dir / 'eval' / dataset.name}")
    eval_settings = prepare_index(settings, dataset)
    queries = list(dataset.queries(only=set(dataset.qrels())).values())[: args.queries]

    with tempfile.TemporaryDirectory(prefix="sieve-bench-api-") as tmp:
        scratch = Path(tmp)
        model = reranker_folder(args.reranker, scratch)
        note(f"reranker: {model}")
        bench_settings = eval_settings.with_overrides(
            data_dir=eval_settings.data_dir.resolve(),
            rerank_backend="local",
            rerank_model=model.name,
            rerank_models_dir=model.parent,
            cache_url="",
        )
        # The server and this process each own a copy: the embedded indexes admit
        # one process per folder.
        local_dir = scratch / "in-process" / eval_settings.data_dir.name
        shutil.copytree(eval_settings.data_dir, local_dir)
        note(f"HTTP (gunicorn gthread x{args.threads}) and in-process, interleaved")
        rows = bench(
            bench_settings,
            bench_settings.with_overrides(data_dir=local_dir),
            queries,
            args,
            scratch / "server.log",
        )

    added = overheads(rows)
    when = datetime.now(UTC)
    print(
        f"# API bench {when:%Y-%m-%d %H:%M} UTC on {platform.node()} ({os.cpu_count()} CPUs), "
        f"{dataset.name}/test: {len(queries)} queries cycled, {args.requests} requests per config, "
        f"top_k {TOP_K}, reranker {args.reranker}, gunicorn gthread x{args.threads}"
    )
    print(
        "| path | rerank | clients | req/s | p50 ms | p95 ms | p99 ms "
        "| outside engine p50 ms | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rerank = "on (cached)" if r.rerank else "off"
        print(
            f"| {r.path} | {rerank} | {r.clients} | {r.rps:.1f} | {r.p50_ms:.2f} "
            f"| {r.p95_ms:.2f} | {r.p99_ms:.2f} | {r.outside_p50_ms:.2f} | {r.errors} |"
        )
    print()
    print(
        "| rerank | clients | HTTP p50 - in-process p50 ms | HTTP p95 - in-process p95 ms "
        "| HTTP outside engine p50 ms | HTTP req/s / in-process |"
    )
    print("|---|---|---|---|---|---|")
    for a in added:
        rerank = "on (cached)" if a["rerank"] else "off"
        print(
            f"| {rerank} | {a['clients']} | {a['p50_added_ms']:.2f} | {a['p95_added_ms']:.2f} "
            f"| {a['outside_engine_p50_ms']:.2f} | {a['rps_ratio']} |"
        )
    if args.json:
        out = {
            "date": when.isoformat(timespec="seconds"),
            "machine": {"node": platform.node(), "cpus": os.cpu_count()},
            "dataset": dataset.name,
            "queries": len(queries),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "rows": [asdict(r) for r in rows],
            "overhead": added,
        }
        print(json.dumps(out))
    if any(r.errors for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
