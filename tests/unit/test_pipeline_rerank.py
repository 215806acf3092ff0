"""The rerank stage of the pipeline: order, and offsets mapped back past the title."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

import pytest

from search.config import Settings
from search.errors import ConfigError, InvalidRequest
from search.keyword.base import Candidates
from search.passages import passage_digest, passage_ref
from search.pipeline import Pipeline, passage_span
from search.rerank.calibration import Calibration
from search.types import RerankBatch, RerankScore, ScoredChunk, SearchRequest, SearchResult

pytestmark = pytest.mark.unit

TEXT = "Cast iron keeps heat. Season it with oil. Never soak it in water overnight."


@pytest.mark.parametrize(
    ("prefix", "start", "end", "expected"),
    [
        (0, 0, len(TEXT), (0, len(TEXT))),  # the window covered the whole passage
        (0, 22, 41, (22, 41)),  # a window inside a long passage
        (6, 28, 47, (22, 41)),  # the same window behind a 6-character title line
        (6, 0, 5, (0, len(TEXT))),  # a window within the title: the whole passage
        (6, 2, 20, (0, 14)),  # a window starting in the title: from the passage's start
        (6, 0, 6 + len(TEXT) + 9, (0, len(TEXT))),  # past the end (tokeniser slack)
        (0, 0, 0, (0, len(TEXT))),  # no offsets given (a scorer without windows)
    ],
)
def test_passage_span(prefix, start, end, expected):
    assert passage_span(prefix, len(TEXT), start, end) == expected


class Keyword:
    """A keyword leg answering fixed chunks (the pipeline's rules are under test, not BM25).

    Like the real ones it answers ids and scores first and passages on demand;
    ``hydrated`` records which chunk ids were asked for.
    """

    in_process = True

    def __init__(self, chunks: list[ScoredChunk]) -> None:
        self.chunks = chunks
        self.hydrated: list[str] = []

    def candidates(self, tokens, depth, filters):
        by_id = {c.chunk_id: c for c in self.chunks[:depth]}

        def hydrate(chunk_ids):
            self.hydrated.extend(chunk_ids)
            return {c: by_id[c] for c in chunk_ids if c in by_id}

        ids = [ScoredChunk(c.chunk_id, c.doc_id, c.score) for c in self.chunks[:depth]]
        return Candidates(ids, hydrate)


class Windows:
    """A reranker answering chosen logits and windows, in the order it is given passages."""

    model_key = "windows@test"

    def __init__(self, answers: dict[str, tuple[float, int, int]]) -> None:
        self.answers, self.seen = answers, []

    def rerank(self, query: str, passages: Sequence[str]) -> RerankBatch:
        self.seen = list(passages)
        scores = []
        for passage in passages:
            key = next(k for k in self.answers if k in passage)
            logit, start, end = self.answers[key]
            scores.append(RerankScore(logit=logit, score=logit / 10, start=start, end=end))
        return RerankBatch(scores)


class NoEmbedder:
    model_name, languages = "none", ("en",)

    def serves(self, script):
        return True


def chunk(doc: str, title: str, text: str, start: int) -> ScoredChunk:
    return ScoredChunk(
        chunk_id=f"{doc}-c",
        doc_id=doc,
        score=1.0,
        text=text,
        title=title,
        start=start,
        end=start + len(text),
    )


class ReadsPassages(Windows):
    """A reranker in another process that reads indexed passages by reference."""

    reads_passages = True

    def rerank(self, query: str, passages: Sequence[str], refs=None) -> RerankBatch:
        self.refs = refs
        return super().rerank(query, passages)


def test_a_reranker_that_reads_passages_is_told_each_chunk_and_its_digest():
    chunks = [chunk("a", "Pans", TEXT, 100), chunk("b", "", "Short note on oil.", 0)]
    reranker = ReadsPassages({TEXT: (1.0, 0, 0), "Short note": (3.0, 0, 0)})
    pipeline = Pipeline(Settings(), Keyword(chunks), None, NoEmbedder(), reranker=reranker)
    request = SearchRequest(query="oil", mode="bm25", top_k=2, rerank=True, collection="kb")
    pipeline.search(request)
    # The text is still given (a cache keys on it); the refs name where to read it.
    assert reranker.seen == [f"Pans\n{TEXT}", "Short note on oil."]
    assert reranker.refs == [
        passage_ref("kb", "a-c", f"Pans\n{TEXT}"),
        passage_ref("kb", "b-c", "Short note on oil."),
    ]
    assert reranker.refs[0].digest == passage_digest(f"Pans\n{TEXT}")
    pipeline.search(replace(request, collection=None))
    assert {ref.collection for ref in reranker.refs} == {Settings().collection}


def test_rerank_orders_the_head_and_maps_windows_into_the_document():
    chunks = [
        chunk("a", "Pans", TEXT, 100),  # titled, long: scored by an inner window
        chunk("b", "", "Short note on oil.", 0),  # untitled, shorter than a window
        chunk("c", "Kettles", "Descale a kettle with vinegar.", 40),  # window in the title
        chunk("d", "", "Beyond the rerank depth.", 0),
    ]
    reranker = Windows(
        {
            TEXT: (1.0, len("Pans\n") + 22, len("Pans\n") + 41),
            "Short note": (3.0, 0, len("Short note on oil.")),
            "Descale": (2.0, 0, 3),
        }
    )
    pipeline = Pipeline(Settings(), Keyword(chunks), None, NoEmbedder(), reranker=reranker)
    result = pipeline.search(
        SearchRequest(query="cast iron", mode="bm25", top_k=4, rerank=True, rerank_depth=3)
    )
    # The cross-encoder saw each title line before its passage.
    assert reranker.seen == [
        f"Pans\n{TEXT}",
        "Short note on oil.",
        "Kettles\nDescale a kettle with vinegar.",
    ]
    assert [h.doc_id for h in result.hits] == ["b", "c", "a", "d"]
    assert [h.rank for h in result.hits] == [1, 2, 3, 4]
    b, c, a, d = result.hits
    assert (a.start, a.end, a.text) == (122, 141, TEXT[22:41])
    assert (b.start, b.end, b.text) == (0, 18, "Short note on oil.")
    assert (c.start, c.end) == (40, 40 + len("Descale a kettle with vinegar."))
    assert c.text == "Descale a kettle with vinegar."
    assert (a.rerank_logit, a.score) == (1.0, 0.1)
    assert d.rerank_logit is None and d.text == "Beyond the rerank depth."
    assert result.reranked and result.rerank_window == 3


class Calibrated(Windows):
    """A reranker with a calibration: relevance = logit / 4 (monotone, as a fitted one is)."""

    calibration = Calibration("isotonic", "fp", x=(0.0, 4.0), y=(0.0, 1.0))


def test_calibrated_hits_carry_relevance_and_min_relevance_keeps_the_passing_head():
    chunks = [chunk(d, "", f"Passage {d}.", 0) for d in "abcd"]
    answers = {"Passage a": (1.0, 0, 0), "Passage b": (3.0, 0, 0), "Passage c": (2.0, 0, 0)}
    reranker = Calibrated(answers)
    pipeline = Pipeline(Settings(), Keyword(chunks), None, NoEmbedder(), reranker=reranker)
    request = SearchRequest(query="q", mode="bm25", top_k=4, rerank=True, rerank_depth=3)
    hits = pipeline.search(request).hits
    assert [(h.doc_id, h.relevance) for h in hits] == [
        ("b", 0.75),
        ("c", 0.5),
        ("a", 0.25),
        ("d", None),
    ]
    kept = pipeline.search(replace(request, min_relevance=0.5))
    # "d" is past the rerank depth: its relevance is unknown, so it cannot pass.
    assert [(h.doc_id, h.rank) for h in kept.hits] == [("b", 1), ("c", 2)]
    assert kept.total_window == 2
    assert pipeline.search(replace(request, min_relevance=0.0)).total_window == 3


def test_min_relevance_without_a_calibration_names_the_fix():
    chunks = [chunk("a", "", "Passage a.", 0)]
    pipeline = Pipeline(
        Settings(), Keyword(chunks), None, NoEmbedder(), reranker=Windows({"Passage": (1.0, 0, 0)})
    )
    request = SearchRequest(query="q", mode="bm25", min_relevance=0.5)
    with pytest.raises(InvalidRequest, match="no calibration exists.*sieve calibrate"):
        pipeline.search(request)
    assert pipeline.search(replace(request, min_relevance=None)).hits[0].relevance is None


def test_a_configured_blend_orders_the_head_and_is_reported():
    chunks = [chunk(doc, "", f"Passage {doc}.", 0) for doc in "abcd"]
    logits = {"Passage a": 1.0, "Passage b": 3.0, "Passage c": 2.0}
    reranker = Windows({k: (v, 0, 0) for k, v in logits.items()})
    request = SearchRequest(query="q", mode="bm25", top_k=4, rerank=True, rerank_depth=3)

    def search(weight: float) -> SearchResult:
        settings = Settings(rerank_blend_weight=weight)
        return Pipeline(settings, Keyword(chunks), None, NoEmbedder(), reranker=reranker).search(
            request
        )

    pure = search(0.0)
    assert [h.doc_id for h in pure.hits] == ["b", "c", "a", "d"] and pure.rerank_blend is None
    # A strong prior gives the retrieval order back; the scores stay the reranker's.
    blended = search(100.0)
    assert [h.doc_id for h in blended.hits] == ["a", "b", "c", "d"]
    assert [h.rank for h in blended.hits] == [1, 2, 3, 4]
    assert blended.rerank_blend == 100.0
    assert [(h.rerank_logit, h.rerank_score, h.score) for h in blended.hits[:3]] == [
        (1.0, 0.1, 0.1),
        (3.0, 0.3, 0.3),
        (2.0, 0.2, 0.2),
    ]
    # At a moderate weight the prior lifts a (retrieved first) past c.
    assert [h.doc_id for h in search(1.0).hits] == ["b", "a", "c", "d"]


def test_the_blend_weight_setting_is_validated():
    with pytest.raises(ConfigError, match="SIEVE_RERANK_BLEND_WEIGHT"):
        Settings(rerank_blend_weight=-0.5)
    assert Settings.from_env({"SIEVE_RERANK_BLEND_WEIGHT": "0.3"}).rerank_blend_weight == 0.3


class Carded(Windows):
    """A reranker whose model card records the blend ``sieve finetune`` chose."""

    card = {"blend": {"weight": 100.0, "chosen_on": "validation"}}


def test_the_blend_comes_from_collection_then_setting_then_card_and_is_said():
    chunks = [chunk(doc, "", f"Passage {doc}.", 0) for doc in "abcd"]
    reranker = Carded(
        {"Passage a": (1.0, 0, 0), "Passage b": (3.0, 0, 0), "Passage c": (2.0, 0, 0)}
    )
    request = SearchRequest(query="q", mode="bm25", top_k=4, rerank=True, rerank_depth=3)

    def search(settings: Settings, collection: float | None = None) -> SearchResult:
        pipeline = Pipeline(
            settings,
            Keyword(chunks),
            None,
            NoEmbedder(),
            reranker=reranker,
            collection_blend=collection,
        )
        return pipeline.search(request)

    by_card = search(Settings())  # SIEVE_RERANK_BLEND_WEIGHT unset: the card's weight
    assert (by_card.rerank_blend, by_card.rerank_blend_source) == (100.0, "card")
    assert [h.doc_id for h in by_card.hits] == ["a", "b", "c", "d"]
    by_setting = search(Settings(rerank_blend_weight=0.0))
    assert (by_setting.rerank_blend, by_setting.rerank_blend_source) == (None, "setting")
    by_collection = search(Settings(rerank_blend_weight=0.0), collection=1.0)
    assert (by_collection.rerank_blend, by_collection.rerank_blend_source) == (1.0, "collection")
    bare = Pipeline(
        Settings(), Keyword(chunks), None, NoEmbedder(), reranker=Windows({"P": (1, 0, 0)})
    )
    assert bare.search(request).rerank_blend_source == "default"
    assert bare.search(replace(request, rerank=False)).rerank_blend_source is None


def test_an_empty_blend_weight_variable_is_unset():
    assert Settings.from_env({"SIEVE_RERANK_BLEND_WEIGHT": ""}).rerank_blend_weight is None
    assert Settings.from_env({}).rerank_blend_weight is None


def test_only_the_reranked_head_and_the_page_are_hydrated():
    chunks = [chunk(f"d{i}", f"T{i}", f"Passage {i}.", i) for i in range(30)]
    keyword = Keyword(chunks)
    reranker = Windows({f"Passage {i}.": (float(-i), 0, 0) for i in range(30)})
    pipeline = Pipeline(Settings(), keyword, None, NoEmbedder(), reranker=reranker)
    # A page longer than the rerank depth: its tail keeps the fused order.
    request = SearchRequest(query="q", mode="bm25", top_k=8, rerank=True, rerank_depth=5)
    result = pipeline.search(request)
    # The head for the reranker, then the rest of the page; nothing else, nothing twice.
    assert keyword.hydrated == [f"d{i}-c" for i in range(8)]
    assert [(h.doc_id, h.title, h.text, h.start) for h in result.hits] == [
        (f"d{i}", f"T{i}", f"Passage {i}.", i) for i in range(8)
    ]
    assert "hydrate" in result.timings_ms
    keyword.hydrated.clear()
    plain = pipeline.search(SearchRequest(query="q", mode="bm25", top_k=3, offset=6, rerank=False))
    assert keyword.hydrated == ["d6-c", "d7-c", "d8-c"]
    assert [h.text for h in plain.hits] == ["Passage 6.", "Passage 7.", "Passage 8."]
    assert plain.total_window == 30


class ThreadKeyword(Keyword):
    """Records the thread each search ran on."""

    def __init__(self, chunks: list[ScoredChunk], in_process: bool) -> None:
        super().__init__(chunks)
        self.in_process, self.threads = in_process, []

    def candidates(self, tokens, depth, filters):
        self.threads.append(threading.current_thread())
        return super().candidates(tokens, depth, filters)


class ThreadVector:
    def __init__(self, chunks: list[ScoredChunk]) -> None:
        self.chunks, self.threads = chunks, []

    def search(self, vector, depth, filters):
        self.threads.append(threading.current_thread())
        return self.chunks[:depth]


class OneVectorEmbedder(NoEmbedder):
    def warm_up(self):
        pass

    def embed_query(self, text):
        return [1.0]


@pytest.mark.parametrize("in_process", [True, False])
def test_hybrid_runs_an_in_process_bm25_leg_on_the_calling_thread(in_process):
    chunks = [chunk(d, "", f"Passage {d}.", 0) for d in "abc"]
    keyword, vector = ThreadKeyword(chunks, in_process), ThreadVector(chunks[::-1])
    pipeline = Pipeline(Settings(), keyword, vector, OneVectorEmbedder())
    result = pipeline.search(SearchRequest(query="passage", mode="hybrid", top_k=3))
    assert {h.doc_id for h in result.hits} == set("abc") and not result.degraded
    # A server-backed BM25 leg keeps its own deadline in the pool; the vector leg always does.
    here = threading.current_thread()
    assert (keyword.threads == [here]) is in_process
    assert vector.threads and vector.threads[0] is not here
    assert all(h.text == f"Passage {h.doc_id}." for h in result.hits)


def scored(doc: str, score: float) -> ScoredChunk:
    return replace(chunk(doc, "", f"Passage {doc}.", 0), score=score)


@pytest.mark.parametrize(
    ("vector_order", "gap", "skips"),
    [
        ("abc", 0.2, True),  # both legs put "a" first; its fused score leads by a third
        ("abc", 0.5, False),  # ... not by half
        ("bac", 0.0, False),  # the legs disagree on the top hit
        ("abc", None, False),  # the policy is off
    ],
)
def test_a_query_retrieval_is_sure_of_skips_the_reranker(vector_order, gap, skips):
    bm25 = [scored("a", 3.0), scored("b", 2.0), scored("c", 1.0)]
    by_doc = {c.doc_id: c for c in bm25}
    vector = [
        replace(by_doc[d], score=s) for d, s in zip(vector_order, (0.9, 0.6, 0.3), strict=True)
    ]
    reranker = Windows({f"Passage {d}": (float(i), 0, 0) for i, d in enumerate("abc")})
    settings = Settings(rerank_skip_gap=gap)
    pipeline = Pipeline(settings, Keyword(bm25), ThreadVector(vector), OneVectorEmbedder(),
                        reranker=reranker)  # fmt: skip
    result = pipeline.search(SearchRequest(query="passage", mode="hybrid", top_k=3))
    assert result.reranked is not skips
    assert ("rerank" in result.skipped) is skips
    if skips:
        assert result.rerank_window == 0 and result.plan.rerank_depth == 0 and result.plan.rerank
        assert [h.doc_id for h in result.hits] == ["a", "b", "c"]
        assert all(h.rerank_logit is None for h in result.hits)
        assert "SIEVE_RERANK_SKIP_GAP" in result.skipped["rerank"]
    else:
        assert result.rerank_window == 3 and result.hits[0].doc_id == "c"


def test_a_fixed_depth_or_a_relevance_floor_always_reranks():
    bm25 = [scored("a", 3.0), scored("b", 2.0)]
    reranker = Calibrated({"Passage a": (1.0, 0, 0), "Passage b": (3.0, 0, 0)})
    pipeline = Pipeline(Settings(rerank_skip_gap=0.0), Keyword(bm25), ThreadVector(bm25),
                        OneVectorEmbedder(), reranker=reranker)  # fmt: skip
    request = SearchRequest(query="passage", mode="hybrid", top_k=2)
    assert not pipeline.search(request).reranked
    assert pipeline.search(replace(request, rerank_depth=2)).rerank_window == 2
    # Skipping would leave every hit without a relevance, so nothing would pass.
    floored = pipeline.search(replace(request, min_relevance=0.5))
    assert floored.reranked and [h.doc_id for h in floored.hits] == ["b"]


def test_a_skip_gap_below_zero_is_refused():
    with pytest.raises(ConfigError, match="SIEVE_RERANK_SKIP_GAP"):
        Settings(rerank_skip_gap=-0.1)
