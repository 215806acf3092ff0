"""Load test with a failure: mixed traffic on the distributed rerank path, workers killed halfway.

Everything runs on 127.0.0.1, in a temporary folder, for a bounded time:

1. two ``redis-server`` processes (``tests/support/redis_server.RedisServer``): the Celery
   broker (no eviction) and the pair-score cache (allkeys-lru, 64 MB);
2. an index: the sample corpus (``sieve index sample/corpus.jsonl``), or with ``--data`` a
   BEIR data set (SciFact) built or reused by ``search.evaluate.prepare_index`` in
   ``--data-dir`` and copied, since the test writes documents into it (a folder that already
   holds the index is only read);
3. ``--workers`` Celery rerank workers (``tests/support/celery_worker.start_worker``, prefork,
   concurrency 1, ``OMP_NUM_THREADS=1``) on the ``rerank`` queue, each loading a small random
   cross-encoder (``build_tiny_reranker(hidden=128, layers=2)``, XLM-R shape);
4. the API: ``sieve serve`` (gunicorn gthread, one worker process) with
   ``SIEVE_RERANK_BACKEND=celery``, ``SIEVE_CACHE_URL`` on the cache Redis,
   ``SIEVE_RERANK_TIMEOUT_S=1`` and no rate limit;
5. locust, headless, in a subprocess (``bench/locustfile.py``: searches with rerank on,
   LLM context, small document writes), for ``--duration`` seconds. At ``--kill-at`` of the
   run (default halfway) every rerank worker's process group gets SIGKILL.

Report: throughput, latency p50/p95/p99 and error rate per endpoint and overall, before and
after the kill, and how many search/context answers were degraded (``"rerank"`` in
``degraded``: fused order, served past the deadline) against how many failed. Requests are
assigned to a phase by their start time. Also: the CPU time the API and the workers used
(per request), and the rerank tasks left waiting in the broker at the kill and at the end.
Verdict: PASS when the error rate is under ``--max-error-rate`` (1%) and searches keep
answering after the kill (successful searches > 0, some of them degraded "rerank");
otherwise FAIL and exit status 1.

Every process started here is stopped on exit (also on Ctrl-C or SIGTERM). The workers share
one queue and therefore one Celery node name; gossip, mingle and heartbeats are off
(``start_worker``), so nothing relies on the names being distinct.

Run: ``.venv/bin/python bench/load.py [--duration 60] [--workers 2] [--users 16]
[--spawn-rate 8] [--fresh-share 0.2] [--data ../shared/data/scifact --data-dir DIR]
[--out DIR] [--json]``. Results of a run: docs/benchmarks.md, "Load".
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support.celery_worker import CeleryWorker, start_worker  # noqa: E402
from support.redis_server import RedisServer  # noqa: E402

from search.evaluate import percentile  # noqa: E402

QUEUE = "rerank"
STARTUP_TIMEOUT_S = 180.0
ENDPOINTS = ("search", "context", "index")

T0 = time.monotonic()


def note(message: str) -> None:
    """Progress on stderr, with the seconds since start."""
    print(f"[{time.monotonic() - T0:6.1f} s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    """This environment without the developer's own SIEVE_* settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SIEVE_")}


def kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Signal the process group a ``start_new_session`` child leads (gone already: nothing)."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM the group, then SIGKILL it if it has not exited within ``timeout_s``."""
    if process.poll() is None:
        kill_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
    kill_group(process, signal.SIGKILL)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        note(f"process {process.pid} did not exit after SIGKILL")


@dataclass
class Stack:
    """What this run started, so that ``close`` stops all of it."""

    redis: list[RedisServer] = field(default_factory=list)
    workers: list[CeleryWorker] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for process in reversed(self.processes):  # locust first, then the API
            stop_process(process)
        for worker in self.workers:
            try:
                worker.stop()
            except Exception as exc:  # noqa: BLE001 - keep cleaning up the rest
                note(f"stopping worker {worker.process.pid}: {exc}")
        for server in self.redis:
            server.cleanup()
        for handle in self.logs:
            handle.close()


# -- setting up ---------------------------------------------------------------------


def build_index(args: argparse.Namespace, work: Path) -> tuple[Path, str, Path]:
    """The data folder the API serves, its collection, and the queries file."""
    if args.data is None:
        data_dir = work / "data"
        command = [sys.executable, "-m", "api", "--data-dir", str(data_dir), "index"]
        command.append(str(ROOT / "sample" / "corpus.jsonl"))
        note("indexing the sample corpus")
        with (work / "index.log").open("wb") as log:
            done = subprocess.run(
                command,
                cwd=ROOT,
                env=clean_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=600,
                check=False,
            )
        if done.returncode not in (0, 1):  # 1: a sample line was skipped, the rest indexed
            raise SystemExit(f"error: sieve index failed; see {work / 'index.log'}")
        return data_dir, "default", ROOT / "sample" / "queries.jsonl"

    from search.config import Settings
    from search.evaluate import Dataset, prepare_index

    dataset = Dataset.open(args.data)
    base = Path(args.data_dir or os.environ.get("SIEVE_DATA_DIR") or ROOT / "data")
    built = base / "eval" / dataset.name
    if (built / "fingerprint.json").is_file():
        # Work on a copy: the test writes documents into it, and prepare_index would
        # rebuild a stale index in place. The folder given is only read.
        note(f"copying the {dataset.name} index from {built}")
        shutil.copytree(built, work / "prepared" / "eval" / dataset.name)
        base = work / "prepared"
    else:
        note(f"building the {dataset.name} index in {base} (~20 min on 2 cores; reused later)")
    settings = prepare_index(Settings(data_dir=base), dataset)
    data_dir = work / "data"
    shutil.copytree(settings.data_dir, data_dir)
    return data_dir, settings.collection, dataset.queries_path


def api_env(
    args: argparse.Namespace, data_dir: Path, collection: str, model: Path, broker: str, cache: str
) -> dict[str, str]:
    env = clean_env()
    env.update(
        {
            "SIEVE_DATA_DIR": str(data_dir),
            "SIEVE_COLLECTION": collection,
            "SIEVE_RERANK_BACKEND": "celery",
            "SIEVE_RERANK_MODEL": str(model),
            "SIEVE_RERANK_QUEUE": QUEUE,
            "SIEVE_RERANK_TIMEOUT_S": str(args.rerank_timeout),
            "SIEVE_BROKER_URL": broker,
            "SIEVE_CACHE_URL": cache,
            "SIEVE_RATE_LIMIT": "",  # locust is the only client; 600/minute would 429 it
            "SIEVE_API_KEYS": "",  # open API, so `sieve serve` binds 127.0.0.1 only
            "SIEVE_HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if client.get(url + "/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
    tail = log_path.read_text(errors="replace")[-3000:]
    raise SystemExit(f"error: the API did not come up on {url}; its log:\n{tail}")


def warm_up(url: str, collection: str, queries_path: Path) -> None:
    """Load the models: search until an answer comes back reranked (bounded)."""
    first = json.loads(queries_path.read_text(encoding="utf-8").splitlines()[0])["text"]
    deadline = time.monotonic() + 120
    with httpx.Client(base_url=url, timeout=60.0) as client:
        for attempt in range(1, 31):
            body = {"query": f"{first} warm{attempt}", "collection": collection, "rerank": True}
            answer = client.post("/v1/search", json=body)
            if answer.status_code == 200 and answer.json().get("reranked"):
                client.post("/v1/context", json={"query": first, "collection": collection})
                note(f"warm: reranked search after {attempt} call(s)")
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
    raise SystemExit("error: no reranked search answer while warming up (workers not serving?)")


def document_count(url: str, collection: str) -> int | None:
    """Documents in the collection's registry (the stats endpoint), or None."""
    try:
        count = httpx.get(f"{url}/v1/collections/{collection}/stats", timeout=10.0).json()
    except (httpx.HTTPError, ValueError):
        return None
    count = count.get("documents") if isinstance(count, dict) else None
    return count if isinstance(count, int) else None


def broker_backlog(server: RedisServer) -> dict[str, int | None]:
    """Messages waiting on the rerank queue and the broker's memory (None if unreachable)."""
    import redis

    client = redis.Redis(port=server.port, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        return {
            "queued_tasks": int(client.llen(QUEUE)),
            "used_memory_bytes": int(client.info("memory")["used_memory"]),
        }
    except redis.RedisError:
        return {"queued_tasks": None, "used_memory_bytes": None}
    finally:
        client.close()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and their live descendants."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


# -- the run --------------------------------------------------------------------------


def run(args: argparse.Namespace, work: Path, stack: Stack) -> dict[str, Any]:
    from support.tiny_models import build_tiny_reranker

    model = build_tiny_reranker(work / "models" / "tiny-reranker", hidden=128, layers=2)
    note(f"reranker: random XLM-R classifier, hidden 128, 2 layers, in {model}")
    broker = RedisServer()  # no maxmemory: the broker must not evict
    cache = RedisServer(maxmemory="64mb", maxmemory_policy="allkeys-lru")
    for server in (broker, cache):
        stack.redis.append(server)
        server.start()
    note(f"redis: broker {broker.url}, cache {cache.url}")

    data_dir, collection, queries_path = build_index(args, work)

    env = {"SIEVE_RERANK_MODEL": str(model), "OMP_NUM_THREADS": "1"}
    for n in range(args.workers):
        log_path = work / f"worker{n}.log"
        stack.workers.append(start_worker(broker.url, log_path, queue=QUEUE, env=env))
        note(f"rerank worker {n} ready (pid {stack.workers[-1].process.pid})")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api_log = work / "api.log"
    command = [sys.executable, "-m", "api", "serve", "--port", str(port), "--workers", "1"]
    command += ["--threads", str(args.threads)]
    handle = api_log.open("wb")
    stack.logs.append(handle)
    api = subprocess.Popen(
        command,
        cwd=ROOT,
        env=api_env(args, data_dir, collection, model, broker.url, cache.url),
        stdin=subprocess.DEVNULL,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack.processes.append(api)
    wait_ready(url, api, api_log)
    note(f"API up on {url}")
    warm_up(url, collection, queries_path)
    docs_before = document_count(url, collection)

    records_path = work / "records.jsonl"
    started_path = work / "started.txt"
    locust_env = clean_env()
    locust_env.update(
        {
            "SIEVE_LOAD_QUERIES": str(queries_path),
            "SIEVE_LOAD_COLLECTION": collection,
            "SIEVE_LOAD_FRESH_SHARE": str(args.fresh_share),
            "SIEVE_LOAD_RECORDS": str(records_path),
            "SIEVE_LOAD_STARTED": str(started_path),
        }
    )
    command = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"),
        "--headless", "-u", str(args.users), "-r", str(args.spawn_rate),
        "--run-time", f"{args.duration}s", "--host", url, "--csv", str(work / "locust"),
        "--only-summary", "--stop-timeout", "10", "--exit-code-on-error", "0",
        "--loglevel", "WARNING",
    ]  # fmt: skip
    locust_log = work / "locust.log"
    handle = locust_log.open("wb")
    stack.logs.append(handle)
    locust = subprocess.Popen(
        command,
        cwd=ROOT,
        env=locust_env,
        stdin=subprocess.DEVNULL,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack.processes.append(locust)
    note(f"locust: {args.users} users, {args.duration} s")

    # The kill is timed from locust's test start, not from its (slow) import.
    deadline = time.monotonic() + 120
    while not started_path.exists():
        if locust.poll() is not None or time.monotonic() > deadline:
            tail = locust_log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"error: locust did not start; its log:\n{tail}")
        time.sleep(0.1)
    test_start = float(started_path.read_text())
    worker_pids = [w.process.pid for w in stack.workers]
    cpu = {"api_start": cpu_seconds([api.pid]), "workers_start": cpu_seconds(worker_pids)}
    kill_at = test_start + args.duration * args.kill_at
    while time.time() < kill_at and locust.poll() is None:
        time.sleep(min(0.1, max(0.0, kill_at - time.time())))
    backlog = {"at_kill": broker_backlog(broker)}
    cpu["workers_kill"] = cpu_seconds(worker_pids)
    cpu["api_kill"] = cpu_seconds([api.pid])
    kill_time = time.time()
    for worker in stack.workers:
        kill_group(worker.process)  # SIGKILL: main process and pool process alike
    for worker in stack.workers:
        worker.process.wait(timeout=10)
    survivors = [pid for w in stack.workers for pid in w.pool_pids()]
    note(
        f"killed {len(stack.workers)} rerank workers at +{kill_time - test_start:.1f} s"
        + (f" (pool processes left: {survivors})" if survivors else "")
    )

    try:
        locust.wait(timeout=args.duration + 120)
    except subprocess.TimeoutExpired:
        note("locust overran its time; stopping it")
        stop_process(locust, timeout_s=15)
    if not records_path.exists():
        tail = locust_log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"error: locust wrote no records; its log:\n{tail}")
    cpu["api_end"] = cpu_seconds([api.pid])
    backlog["at_end"] = broker_backlog(broker)
    records = [json.loads(line) for line in records_path.read_text().splitlines() if line]
    docs_after = document_count(url, collection)
    report = summarise(records, test_start, kill_time)
    report["cpu"] = cpu_report(report, cpu)
    # With no worker left, every rerank task waits in the broker (the broker must not
    # evict) until a worker comes back and drops it as expired.
    report["broker_backlog"] = backlog
    report["setup"] = {
        "data": str(args.data) if args.data else "sample/corpus.jsonl",
        "collection": collection,
        "duration_s": args.duration,
        "kill_at_s": round(kill_time - test_start, 1),
        "users": args.users,
        "spawn_rate": args.spawn_rate,
        "api_threads": args.threads,
        "rerank_workers": args.workers,
        "rerank_timeout_s": args.rerank_timeout,
        "fresh_share": args.fresh_share,
        "reranker": "random XLM-R classifier, hidden 128, 2 layers, CPU, OMP_NUM_THREADS=1",
        "documents_before": docs_before,
        "documents_after": docs_after,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average "
        + ", ".join(f"{x:.1f}" for x in os.getloadavg()),
    }
    report["locust_csv"] = locust_aggregate(work / "locust_stats.csv")
    return report


# -- the report -------------------------------------------------------------------------


def server_p50(records: list[dict[str, Any]], stage: str) -> float | None:
    """Median of a stage's time as the server reported it (``timings_ms``)."""
    values = [r["server_ms"][stage] for r in records if stage in r.get("server_ms", {})]
    return round(percentile(values, 50), 1) if values else None


def stats(records: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Counts, rate and latency of a set of requests."""
    ok = [r for r in records if r.get("ok")]
    latencies = [r["ms"] for r in records if "ms" in r]
    answered = [r for r in ok if "degraded" in r]
    degraded = [r for r in answered if "rerank" in r["degraded"]]
    return {
        "requests": len(records),
        "ok": len(ok),
        "errors": len(records) - len(ok),
        "error_rate": round((len(records) - len(ok)) / len(records), 4) if records else 0.0,
        "rps": round(len(ok) / seconds, 2) if seconds > 0 else 0.0,
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "degraded_rerank": len(degraded),
        "degraded_share": round(len(degraded) / len(answered), 4) if answered else None,
        "reranked": sum(1 for r in answered if r.get("reranked")),
        "server_total_p50_ms": server_p50(ok, "total"),
        "server_embed_p50_ms": server_p50(ok, "embed"),
        "server_rerank_p50_ms": server_p50(ok, "rerank"),
        "fresh_degraded": sum(1 for r in degraded if r.get("fresh")),
        "other_degraded": sum(1 for r in answered if set(r["degraded"]) - {"rerank"}),
    }


def summarise(records: list[dict[str, Any]], test_start: float, kill_time: float) -> dict[str, Any]:
    end = max((r.get("t1", r["t0"]) for r in records), default=kill_time)
    phases = {
        "before": ([r for r in records if r["t0"] < kill_time], kill_time - test_start),
        "after": ([r for r in records if r["t0"] >= kill_time], end - kill_time),
        "all": (records, end - test_start),
    }
    out: dict[str, Any] = {"phases": {}}
    for phase, (chosen, seconds) in phases.items():
        rows = {"overall": stats(chosen, seconds)}
        for endpoint in ENDPOINTS:
            rows[endpoint] = stats([r for r in chosen if r["endpoint"] == endpoint], seconds)
        out["phases"][phase] = {"seconds": round(seconds, 1), "rows": rows}
    errors: dict[str, int] = {}
    for r in records:
        if not r.get("ok"):
            key = str(r.get("error", "?"))[:80]
            errors[key] = errors.get(key, 0) + 1
    out["error_samples"] = dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5])
    return out


def cpu_report(report: dict[str, Any], cpu: dict[str, float]) -> dict[str, Any]:
    """CPU time per request: the API (gunicorn master and worker) per phase, and the
    rerank workers per rerank call they were asked for before the kill."""
    phases = report["phases"]
    before, after = phases["before"]["rows"]["overall"], phases["after"]["rows"]["overall"]
    api_before = cpu["api_kill"] - cpu["api_start"]
    api_after = cpu["api_end"] - cpu["api_kill"]
    workers = cpu["workers_kill"] - cpu["workers_start"]
    return {
        "api_cpu_s_before": round(api_before, 2),
        "api_cpu_s_after": round(api_after, 2),
        "api_cpu_ms_per_request_before": round(1000 * api_before / max(1, before["ok"]), 1),
        "api_cpu_ms_per_request_after": round(1000 * api_after / max(1, after["ok"]), 1),
        "api_cores_busy_before": round(api_before / max(1e-9, phases["before"]["seconds"]), 2),
        "rerank_workers_cpu_s_before": round(workers, 2),
        "rerank_workers_cores_busy_before": round(
            workers / max(1e-9, phases["before"]["seconds"]), 2
        ),
    }


def locust_aggregate(path: Path) -> dict[str, Any] | None:
    """Locust's own 'Aggregated' row, as a cross-check of the figures computed here."""
    if not path.exists():
        return None
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("Name") == "Aggregated":
                keys = ("Request Count", "Failure Count", "Requests/s", "50%", "95%", "99%")
                return {k: row.get(k) for k in keys}
    return None


def verdict(report: dict[str, Any], max_error_rate: float) -> list[tuple[bool, str]]:
    overall = report["phases"]["all"]["rows"]["overall"]
    after = report["phases"]["after"]["rows"]["search"]
    return [
        (
            overall["error_rate"] < max_error_rate,
            f"error rate {overall['error_rate']:.2%} < {max_error_rate:.0%} "
            f"({overall['errors']} of {overall['requests']} requests)",
        ),
        (after["ok"] > 0, f"searches answered after the kill: {after['ok']}"),
        (
            after["degraded_rerank"] > 0,
            f"searches after the kill degraded 'rerank' (fused order): {after['degraded_rerank']}",
        ),
    ]


def table(report: dict[str, Any]) -> str:
    lines = [
        "| phase | endpoint | requests | errors (rate) | req/s | p50 ms | p95 ms | p99 ms "
        '| degraded "rerank" (share) | reranked (search) |',
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for phase, data in report["phases"].items():
        label = f"{phase} ({data['seconds']} s)"
        for endpoint, s in data["rows"].items():
            share = "" if s["degraded_share"] is None else f" ({s['degraded_share']:.0%})"
            has_answers = endpoint in ("search", "context", "overall")
            lines.append(
                f"| {label} | {endpoint} | {s['requests']} | {s['errors']} "
                f"({s['error_rate']:.2%}) | {s['rps']} | {s['p50_ms']} | {s['p95_ms']} "
                f"| {s['p99_ms']} | {str(s['degraded_rerank']) + share if has_answers else ''} "
                f"| {s['reranked'] if endpoint == 'search' else ''} |"
            )
            label = ""
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=60, help="locust run time, seconds")
    parser.add_argument("--kill-at", type=float, default=0.5, help="share of the run (0-1)")
    parser.add_argument("--workers", type=int, default=2, help="Celery rerank workers")
    parser.add_argument("--users", type=int, default=16, help="locust users")
    parser.add_argument("--spawn-rate", type=float, default=8, help="users started per second")
    parser.add_argument("--threads", type=int, help="gunicorn threads (default: --users)")
    parser.add_argument("--rerank-timeout", type=float, default=1.0, help="SIEVE_RERANK_TIMEOUT_S")
    parser.add_argument(
        "--fresh-share",
        type=float,
        default=0.2,
        help="share of queries made unique, so the pair-score cache misses",
    )
    parser.add_argument("--data", type=Path, help="a BEIR data set (e.g. ../shared/data/scifact)")
    parser.add_argument("--data-dir", type=Path, help="where --data's index is built or reused")
    parser.add_argument("--max-error-rate", type=float, default=0.01)
    parser.add_argument("--out", type=Path, help="keep logs, records and CSVs here")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()
    if not 1 <= args.duration <= 3600 or not 0 < args.kill_at < 1 or args.workers < 1:
        parser.error("need 1 <= --duration <= 3600, 0 < --kill-at < 1 and --workers >= 1")
    if args.users < 1 or not 0 <= args.fresh_share <= 1:
        parser.error("need --users >= 1 and 0 <= --fresh-share <= 1")
    args.threads = args.threads or args.users

    # SIGTERM takes the same way out as Ctrl-C, through the finally below.
    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    work = args.out.resolve() if args.out else Path(tempfile.mkdtemp(prefix="sieve-load-"))
    stack = Stack()
    try:
        report = run(args, work, stack)
    except KeyboardInterrupt:
        note("interrupted; stopping everything")
        return 130
    finally:
        # A second Ctrl-C must not cut the clean-up short (every step in it is bounded).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.close()
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)
        note("all processes stopped")

    checks = verdict(report, args.max_error_rate)
    report["checks"] = [{"pass": ok, "check": text} for ok, text in checks]
    report["pass"] = all(ok for ok, _ in checks)
    if args.json:
        print(json.dumps(report))
    else:
        print(table(report))
        if report["error_samples"]:
            print("errors:", json.dumps(report["error_samples"]))
        print("setup:", json.dumps(report["setup"]))
        print("cpu:", json.dumps(report["cpu"]))
        print("broker backlog:", json.dumps(report["broker_backlog"]))
        print("locust's own aggregate:", json.dumps(report["locust_csv"]))
        for ok, text in checks:
            print(f"{'PASS' if ok else 'FAIL'}: {text}")
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
