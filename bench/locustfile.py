"""Mixed traffic for a Sieve server: search (reranked), LLM context, and indexing.

One simulated user waits 0.05-0.2 s between calls and picks, by weight:

- ``POST /v1/search`` (weight 6): a query from the query file, ``"rerank": true``. A share
  of them (``SIEVE_LOAD_FRESH_SHARE``, default 0.2) carries a unique suffix, so its
  (query, passage) pairs are not in the pair-score cache and the reranker must run; the
  rest repeat queries, as real traffic does, and are mostly answered from the cache.
- ``POST /v1/context`` (weight 3): the same queries, ``"max_tokens": 800``.
- ``POST /v1/collections/<c>/documents`` (weight 1): one small new document with a
  unique id (answered 202; the server indexes it in the background).

A search or context answer that came back but names stages in ``degraded`` is a
success for locust (the service answered, in fused order) and is counted apart: in
the module-level ``DEGRADED`` counter, by a ``degraded`` event (``environment.events
.degraded``, fired with endpoint and stages, for any listener), and in the per-request
records. An error is a non-2xx answer, a transport error, or a 2xx answer that is not
the JSON expected.

Settings (environment, so ``bench/load.py`` can hand them to a locust subprocess):

- ``SIEVE_LOAD_QUERIES``: a BEIR ``queries.jsonl`` (default: ``sample/queries.jsonl``).
- ``SIEVE_LOAD_COLLECTION``: the collection searched and written (default ``default``).
- ``SIEVE_LOAD_FRESH_SHARE``: share of uncacheable searches and contexts (0-1, 0.2).
- ``SIEVE_LOAD_RECORDS``: if set, every request is written there as one JSON line when
  locust quits (``t0``/``t1`` epoch seconds, endpoint, status, latency, degraded, ...).
- ``SIEVE_LOAD_STARTED``: if set, the epoch time of the test start is written there.

Run on its own::

    .venv/bin/locust -f bench/locustfile.py --headless -u 16 -r 8 --run-time 60s \\
        --host http://127.0.0.1:8000
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from locust import HttpUser, between, events, task
from locust.event import EventHook

ROOT = Path(__file__).resolve().parents[1]
QUERIES_PATH = Path(os.environ.get("SIEVE_LOAD_QUERIES") or ROOT / "sample" / "queries.jsonl")
COLLECTION = os.environ.get("SIEVE_LOAD_COLLECTION") or "default"
FRESH_SHARE = float(os.environ.get("SIEVE_LOAD_FRESH_SHARE") or 0.2)
RECORDS_PATH = os.environ.get("SIEVE_LOAD_RECORDS") or ""
STARTED_PATH = os.environ.get("SIEVE_LOAD_STARTED") or ""
REQUEST_TIMEOUT_S = 30.0  # every call is bounded; the server's own deadlines are far below
RUN_ID = uuid.uuid4().hex[:8]

log = logging.getLogger("sieve.locust")

# (endpoint, stage) -> answers that named the stage in ``degraded``.
DEGRADED: Counter[tuple[str, str]] = Counter()
# One dict per request, written out at quit (SIEVE_LOAD_RECORDS).
RECORDS: list[dict[str, Any]] = []

_WORDS = (
    "water heat cook rice pan skillet knife garden soil plant tomato compost bike tyre chain "
    "brake pressure burn sting first aid password account router printer storm lightning "
    "flood travel card fee jet lag fund emergency safety store cool warm protein gene patient "
    "study results risk treatment clinical effect cell vitamin sleep exercise"
).split()


def _load_queries(path: Path) -> list[str]:
    queries = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                text = str(json.loads(line).get("text", "")).strip()
                if text:
                    queries.append(text[:2000])
    if not queries:
        raise SystemExit(f"no queries in {path}")
    return queries


QUERIES = _load_queries(QUERIES_PATH)
_counter = iter(range(1, 1 << 62))


def _query() -> tuple[str, bool]:
    """A query, and whether it was made unique (so the pair-score cache cannot answer it)."""
    text = random.choice(QUERIES)
    if random.random() < FRESH_SHARE:
        return f"{text} {RUN_ID}q{next(_counter)}", True
    return text, False


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    # A custom event: listeners get endpoint, stages and the request's start time.
    environment.events.degraded = EventHook()


@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    if STARTED_PATH:
        Path(STARTED_PATH).write_text(f"{time.time():.6f}\n")


_written = False


@events.quitting.add_listener
def _on_quitting(environment: Any, **_: Any) -> None:
    global _written
    if _written:
        return
    _written = True
    summary = ", ".join(f"{ep} {stage}: {n}" for (ep, stage), n in sorted(DEGRADED.items()))
    log.warning("degraded answers: %s", summary or "none")
    if RECORDS_PATH:
        with open(RECORDS_PATH, "w", encoding="utf-8") as out:
            for record in RECORDS:
                out.write(json.dumps(record) + "\n")


class SieveUser(HttpUser):
    """One client of the service: mostly searches, some context, a few writes.

    (Task methods end in ``_task``: ``User.context()`` is locust's own, called per request.)
    """

    wait_time = between(0.05, 0.2)

    def _call(
        self, endpoint: str, path: str, body: dict[str, Any], expect: int, fresh: bool | None = None
    ) -> None:
        record: dict[str, Any] = {"endpoint": endpoint, "t0": time.time(), "fresh": fresh}
        started = time.perf_counter()
        with self.client.post(
            path, json=body, name=path, catch_response=True, timeout=REQUEST_TIMEOUT_S
        ) as response:
            record["ms"] = round((time.perf_counter() - started) * 1000, 2)
            record["t1"] = time.time()
            record["status"] = response.status_code
            error = None
            answer: Any = None
            if response.status_code == 0:  # no answer: refused, reset, timed out
                error = f"transport: {type(response.error).__name__}: {response.error}"[:200]
            elif response.status_code != expect:
                error = f"HTTP {response.status_code}: {(response.text or '')[:200]}"
            else:
                try:
                    answer = response.json()
                except ValueError:
                    error = "answer is not JSON"
            if error is None and endpoint in ("search", "context"):
                if not isinstance(answer, dict) or not isinstance(answer.get("degraded"), list):
                    error = "answer has no 'degraded' list"
                else:
                    record["degraded"] = answer["degraded"]
                    record["reranked"] = answer.get("reranked")
                    record["cached_scores"] = answer.get("cached_scores")
                    timings = answer.get("timings_ms") or {}
                    record["server_ms"] = {
                        k: timings[k] for k in ("total", "embed", "rerank") if k in timings
                    }
                    for stage in answer["degraded"]:
                        DEGRADED[(endpoint, stage)] += 1
                    if answer["degraded"]:
                        self.environment.events.degraded.fire(
                            endpoint=endpoint, stages=answer["degraded"], t0=record["t0"]
                        )
            record["ok"] = error is None
            if error is None:
                response.success()
            else:
                record["error"] = error
                response.failure(error)
        RECORDS.append(record)

    @task(6)
    def search_task(self) -> None:
        query, fresh = _query()
        body = {"query": query, "collection": COLLECTION, "top_k": 10, "rerank": True}
        self._call("search", "/v1/search", body, 200, fresh)

    @task(3)
    def context_task(self) -> None:
        query, fresh = _query()
        body = {"query": query, "collection": COLLECTION, "max_tokens": 800}
        self._call("context", "/v1/context", body, 200, fresh)

    @task(1)
    def index_task(self) -> None:
        n = next(_counter)
        words = [random.choice(_WORDS) for _ in range(random.randint(30, 80))]
        document = {
            "id": f"load-{RUN_ID}-{n}",
            "title": f"Load test note {n}",
            "text": " ".join(words).capitalize() + ".",
            "metadata": {"source": "bench/load"},
        }
        self._call(
            "index", f"/v1/collections/{COLLECTION}/documents", {"documents": [document]}, 202
        )
