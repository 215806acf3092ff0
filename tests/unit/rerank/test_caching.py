"""CachingReranker in front of an LRU store (with a fake model).

``CountingReranker`` is a test double for the model, not a fault injector: it
implements the ``Reranker`` protocol with deterministic logits and records every
call, so a test can see exactly which pairs reached the model.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import pytest

from search.errors import BackendUnavailable, ConfigError
from search.rerank import CachingReranker, Reranker, sigmoid
from search.scores import CachedScore, LruScoreStore, decode_score, encode_score, pair_key
from search.types import RerankBatch, RerankScore

pytestmark = pytest.mark.unit

MODEL = "fake/reranker@rev1:max_length=512"
PASSAGES = ["Boil the rice for ten minutes.", "Check the tyre pressure.", "Keep the seeds dry."]


def fake_logit(query: str, passage: str) -> float:
    """Deterministic, not round: exact float round trips are what the cache must keep."""
    digest = hashlib.sha256(f"{query}\x00{passage}".encode()).digest()
    return (int.from_bytes(digest[:4], "big") / 2**32 - 0.5) * 17.3


class CountingReranker:
    """A fake model: records each call, optionally waits on a gate or fails."""

    def __init__(self, model_key: str = MODEL) -> None:
        self._model_key = model_key
        self.fail: BaseException | None = None
        self.wrong_count = False
        self.calls: list[list[str]] = []
        self.entered = threading.Event()  # set once a call has started
        self.gate = threading.Event()  # a call waits for this (set unless a test holds it)
        self.gate.set()
        self._lock = threading.Lock()

    @property
    def model_key(self) -> str:
        return self._model_key

    def rerank(
        self, query: str, passages: Sequence[str], *, deadline: float | None = None
    ) -> RerankBatch:
        with self._lock:
            self.calls.append(list(passages))
        self.entered.set()
        self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        scores = [
            RerankScore(fake_logit(query, p), sigmoid(fake_logit(query, p)), 0, len(p))
            for p in passages
        ]
        return RerankBatch(scores[1:] if self.wrong_count else scores, {"model": 1.5})

    def scored(self) -> list[str]:
        return [p for call in self.calls for p in call]


def expected(query: str, passages: Sequence[str]) -> list[RerankScore]:
    return CountingReranker().rerank(query, passages).scores


@pytest.fixture
def inner() -> CountingReranker:
    return CountingReranker()


@pytest.fixture
def cached(inner: CountingReranker) -> CachingReranker:
    return CachingReranker(inner, LruScoreStore(1000), ttl_s=60)


# --- CachingReranker ----------------------------------------------------------------------


def test_is_a_reranker_with_the_inner_model_key(cached):
    assert isinstance(cached, Reranker)
    assert cached.model_key == MODEL


def test_validates_its_settings():
    with pytest.raises(ConfigError):
        CachingReranker(CountingReranker(), LruScoreStore(1), ttl_s=0)


def test_second_identical_call_does_no_model_work(cached, inner):
    first = cached.rerank("cook rice", PASSAGES)
    assert first.cached == 0 and inner.calls == [PASSAGES]
    assert first.scores == expected("cook rice", PASSAGES)
    assert first.timings_ms["model"] == 1.5 and first.timings_ms["cache"] >= 0

    again = cached.rerank("  Cook   RICE ", PASSAGES)
    assert inner.calls == [PASSAGES]
    assert again.cached == len(PASSAGES)
    assert again.scores == first.scores  # logit, score, start, end: all identical
    assert "model" not in again.timings_ms and "cache" in again.timings_ms


def test_changed_passage_misses_only_itself(cached, inner):
    cached.rerank("q", PASSAGES)
    edited = [PASSAGES[0], PASSAGES[1] + " Twice a month.", PASSAGES[2]]
    batch = cached.rerank("q", edited)
    assert inner.calls[1] == [edited[1]]
    assert batch.cached == 2
    assert batch.scores == expected("q", edited)


def test_another_model_revision_misses(inner):
    store = LruScoreStore(1000)
    CachingReranker(inner, store, ttl_s=60).rerank("q", PASSAGES)
    other = CountingReranker(MODEL.replace("rev1", "rev2"))
    batch = CachingReranker(other, store, ttl_s=60).rerank("q", PASSAGES)
    assert batch.cached == 0 and other.calls == [PASSAGES]


def test_duplicates_within_a_call_are_scored_once(cached, inner):
    passages = [PASSAGES[0], PASSAGES[1], PASSAGES[0], PASSAGES[0]]
    batch = cached.rerank("q", passages)
    assert inner.calls == [[PASSAGES[0], PASSAGES[1]]]
    assert batch.scores == expected("q", passages)
    assert cached.rerank("q", passages).cached == 4  # every position answered by the store


def test_empty_call(cached, inner):
    assert cached.rerank("q", []).scores == [] and inner.calls == []


def test_inner_failure_propagates_and_caches_nothing(cached, inner):
    inner.fail = BackendUnavailable("reranker down", backend="rerank")
    with pytest.raises(BackendUnavailable, match="reranker down"):
        cached.rerank("q", PASSAGES)
    assert cached.store.stats()["writes"] == 0
    inner.fail = None
    assert cached.rerank("q", PASSAGES).cached == 0
    assert inner.calls == [PASSAGES, PASSAGES]
    assert cached._inflight == {}


def test_wrong_number_of_scores_is_a_backend_failure(cached, inner):
    inner.wrong_count = True
    with pytest.raises(BackendUnavailable, match="2 scores for 3 passages"):
        cached.rerank("q", PASSAGES)
    assert cached.store.stats()["writes"] == 0


def until(condition, timeout_s: float = 10.0) -> None:
    """Poll ``condition`` until it holds, failing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.002)


def run_gated(cached: CachingReranker, inner: CountingReranker, target, n: int) -> list[object]:
    """``run_threads`` with the model held until one call scores and the others wait on it."""
    inner.gate.clear()
    out: list[object] = []
    runner = threading.Thread(target=lambda: out.extend(run_threads(target, n)))
    runner.start()
    until(lambda: inner.entered.is_set() and cached.waiters == n - 1)
    inner.gate.set()
    runner.join(20)
    return out


def run_threads(target: Callable[[int], object], n: int) -> list[object]:
    """Run ``target`` in ``n`` threads released together; results or exceptions, in order."""
    barrier = threading.Barrier(n)
    out: list[object] = [None] * n

    def work(i: int) -> None:
        barrier.wait()
        try:
            out[i] = target(i)
        except Exception as exc:  # noqa: BLE001 - the test inspects what each thread got
            out[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return out


def test_single_flight_scores_concurrent_identical_misses_once():
    inner = CountingReranker()
    cached = CachingReranker(inner, LruScoreStore(1000), ttl_s=60)
    results = run_gated(cached, inner, lambda _: cached.rerank("q", PASSAGES), 8)
    assert inner.scored().count(PASSAGES[0]) == 1 and len(inner.calls) == 1
    for batch in results:
        assert isinstance(batch, RerankBatch)
        assert batch.scores == expected("q", PASSAGES)
    assert cached._inflight == {}


def test_single_flight_shares_only_the_overlap():
    inner = CountingReranker()
    inner.gate.clear()
    cached = CachingReranker(inner, LruScoreStore(1000), ttl_s=60)
    out: dict[str, RerankBatch] = {}
    first = threading.Thread(target=lambda: out.update(a=cached.rerank("q", PASSAGES[:2])))
    first.start()
    assert inner.entered.wait(5)  # the first thread now owns PASSAGES[0] and [1]
    second = threading.Thread(target=lambda: out.update(b=cached.rerank("q", PASSAGES[1:])))
    second.start()
    until(lambda: len(inner.calls) == 2)
    inner.gate.set()
    first.join(5)
    second.join(5)
    assert inner.calls == [PASSAGES[:2], [PASSAGES[2]]]
    assert out["b"].scores == expected("q", PASSAGES[1:]) and "wait" in out["b"].timings_ms


def test_single_flight_waiters_get_the_owners_error():
    inner = CountingReranker()
    inner.fail = BackendUnavailable("reranker late", backend="rerank")
    cached = CachingReranker(inner, LruScoreStore(1000), ttl_s=60)
    results = run_gated(cached, inner, lambda _: cached.rerank("q", PASSAGES), 5)
    assert len(inner.calls) == 1
    assert all(isinstance(r, BackendUnavailable) and "late" in str(r) for r in results)
    assert cached.store.stats()["writes"] == 0 and cached._inflight == {}
    inner.fail = None
    assert cached.rerank("q", PASSAGES).scores == expected("q", PASSAGES)


def test_single_flight_waiter_gives_up_after_its_timeout():
    inner = CountingReranker()
    inner.gate.clear()
    cached = CachingReranker(inner, LruScoreStore(1000), ttl_s=60, wait_timeout_s=0.1)
    owner = threading.Thread(target=cached.rerank, args=("q", PASSAGES))
    owner.start()
    assert inner.entered.wait(5)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="waiting for an identical rerank"):
        cached.rerank("q", PASSAGES)
    assert time.monotonic() - started < 1.0
    inner.gate.set()
    owner.join(5)
    assert len(inner.calls) == 1  # the waiter never scored on its own
    assert cached.rerank("q", PASSAGES).cached == len(PASSAGES)


class GarbageStore(LruScoreStore):
    """An LRU whose entries went through the wire encoding, some of it corrupted."""

    def __init__(self) -> None:
        super().__init__(100)
        self.raw: dict[str, object] = {}

    def get_many(self, keys: Sequence[str]) -> list[CachedScore | None]:
        return [decode_score(self.raw.get(key)) for key in keys]

    def set_many(self, items: Mapping[str, CachedScore], ttl_s: int) -> None:
        self.raw.update((key, encode_score(value)) for key, value in items.items())


def test_garbage_value_in_store_is_a_miss(inner):
    store = GarbageStore()
    cached = CachingReranker(inner, store, ttl_s=60)
    cached.rerank("q", PASSAGES)
    store.raw[pair_key(MODEL, "q", PASSAGES[1])] = b"\x00not a score"
    batch = cached.rerank("q", PASSAGES)
    assert batch.cached == 2 and inner.calls[1] == [PASSAGES[1]]
    assert batch.scores == expected("q", PASSAGES)
    assert decode_score(store.raw[pair_key(MODEL, "q", PASSAGES[1])]) is not None  # repaired


def test_single_flight_passes_on_an_owners_own_timeout_error():
    inner = CountingReranker()
    inner.fail = TimeoutError("model late")
    cached = CachingReranker(inner, LruScoreStore(1000), ttl_s=60)
    results = run_gated(cached, inner, lambda _: cached.rerank("q", PASSAGES), 4)
    assert len(inner.calls) == 1
    assert all(type(r) is TimeoutError and "model late" in str(r) for r in results)
