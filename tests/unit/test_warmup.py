"""``search.warmup``: parts load once, in the background or on demand, and a load
inside a query shows in its ``timings_ms`` as ``load``."""

from __future__ import annotations

import threading

import pytest

from search.config import Settings
from search.keyword.base import Candidates
from search.pipeline import Pipeline
from search.types import ScoredChunk, SearchRequest
from search.warmup import DICTIONARY, EMBEDDER, RERANKER, Warmup, engine_parts, local_model

pytestmark = pytest.mark.unit


class Model:
    """A part with something to load: counts its loads; ``gate``, when set, holds one."""

    def __init__(self, gate: threading.Event | None = None, fails: int = 0) -> None:
        self.loads, self.gate, self.fails = 0, gate, fails
        self.entered = threading.Event()

    def warm_up(self) -> None:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30), "the test never opened the gate"
        if self.fails:
            self.fails -= 1
            raise RuntimeError("weights not found")
        self.loads += 1


class Embedder(Model):
    model_name, languages, dim = "fake", ("en",), 1

    def serves(self, script: str) -> bool:
        return True

    def embed_query(self, text: str) -> list[float]:
        return [1.0]


class Keyword:
    in_process = True

    def candidates(self, tokens, depth, filters):
        hit = ScoredChunk("a-0", "a", 1.0, text="A passage.", title="", start=0, end=10)
        return Candidates([hit], None)


class Vector:
    def search(self, vector, depth, filters):
        return [ScoredChunk("a-0", "a", 0.9, text="A passage.", title="", start=0, end=10)]


def test_ensure_loads_a_part_once_and_says_how_long_it_took():
    model = Model()
    warmup = Warmup({EMBEDDER: model.warm_up})
    assert warmup.state() == {EMBEDDER: "lazy"} and warmup.warming() == ()
    assert warmup.ensure(EMBEDDER) > 0.0
    assert warmup.ensure(EMBEDDER) == 0.0 and model.loads == 1
    assert warmup.ensure(RERANKER) == 0.0  # not a part: nothing to load
    assert warmup.state() == {EMBEDDER: "ok"}


def test_a_failed_load_is_reported_raised_and_tried_again():
    model = Model(fails=1)
    warmup = Warmup({RERANKER: model.warm_up})
    with pytest.raises(RuntimeError, match="weights not found"):
        warmup.ensure(RERANKER)
    assert warmup.state() == {RERANKER: "error: RuntimeError: weights not found"}
    assert warmup.ensure(RERANKER) > 0.0 and warmup.state() == {RERANKER: "ok"}


def test_a_started_warm_up_is_warming_until_every_part_is_done_and_survives_a_failure():
    gate = threading.Event()
    slow, broken = Model(gate), Model(fails=1)
    warmup = Warmup({EMBEDDER: slow.warm_up, RERANKER: broken.warm_up})
    thread = warmup.start()
    assert slow.entered.wait(30)
    assert warmup.warming() == (EMBEDDER, RERANKER)
    assert warmup.state() == {EMBEDDER: "loading", RERANKER: "loading"}
    assert warmup.start() is thread  # once
    gate.set()
    thread.join(30)
    assert warmup.warming() == ()  # done, though one part failed: that is reported
    assert warmup.state() == {EMBEDDER: "ok", RERANKER: "error: RuntimeError: weights not found"}


def test_the_parts_are_what_has_something_to_load_and_each_makes_a_first_pass():
    class Cache:  # wraps a model, loads nothing itself
        def __init__(self, inner: object) -> None:
            self.inner = inner

    class Scorer(Model):
        def rerank(self, query, passages):
            self.scored = (query, passages)

    model, embedder = Scorer(), Embedder()
    assert local_model(Cache(model)) is model
    assert local_model(Cache(object())) is None and local_model(None) is None
    parts = engine_parts(embedder, Cache(model))
    assert list(parts) == [DICTIONARY, EMBEDDER, RERANKER]
    assert list(engine_parts(object(), None)) == [DICTIONARY]
    parts[RERANKER]()
    assert model.loads == 1 and model.scored == ("warm up", ["warm up"])
    parts[EMBEDDER]()
    assert embedder.loads == 1


def test_a_query_that_loads_a_part_says_so_in_its_timings_and_the_next_does_not():
    embedder = Embedder()
    pipeline = Pipeline(Settings(), Keyword(), Vector(), embedder)
    first = pipeline.search(SearchRequest(query="a passage", mode="hybrid", top_k=1))
    assert first.timings_ms["load"] > 0.0 and embedder.loads == 1
    second = pipeline.search(SearchRequest(query="a passage", mode="hybrid", top_k=1))
    assert "load" not in second.timings_ms and embedder.loads == 1
