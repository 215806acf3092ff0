"""Choosing a collection's own fusion from its judged queries, or keeping the default.

Fusion is a pure function of the two legs' ranked lists, so a grid of
candidates (method, weights, RRF k) can be scored offline once each judged
query's legs have run. The best candidate on all the queries would always look
better than the default: it was chosen on them. ``tune`` therefore
cross-validates: the queries are split into ``folds`` by a hash of their id,
each fold is ranked by the candidate that won on the other folds, and that
out-of-fold run is compared with the default query by query. The tuned fusion
is adopted only when it wins on more held-out queries than it loses, by the
one-sided sign test ``sieve calibrate`` uses for the blend weight
(``search.blend_choice``), and its mean held-out gain is positive; otherwise the
default stays. Either way the evidence is stored with the collection
(``search.engine.FUSION_SETTING``) and shown by ``sieve stats``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from search import fusion
from search.blend_choice import SIGNIFICANCE, sign_test
from search.errors import InvalidRequest
from search.evaluate import TIE_EPSILON, Qrels, per_query
from search.fusion import FusionChoice

if TYPE_CHECKING:
    from search.config import Settings
    from search.engine import SearchEngine

DEPTH = fusion.CHOICE_DEPTH  # documents of each fused run that are scored
MIN_QUERIES = 20  # fewer judged queries cannot tell a better fusion from noise

Legs = fusion.Legs


def candidates() -> Iterable[FusionChoice]:
    """The grid ``tune`` searches: each score-based method and weighted RRF over a
    bm25 share from 0.1 to 0.9, plain RRF, and adaptive fusion (its share per query)."""
    shares = [round(0.1 * i, 1) for i in range(1, 10)]
    yield FusionChoice("rrf")
    yield FusionChoice("adaptive")
    for method in ("bounded", "minmax", "zscore", "weighted_rrf"):
        for share in shares:
            yield FusionChoice(method, (share, round(1.0 - share, 1)))


@dataclass(frozen=True)
class FusionTuning:
    """What ``tune`` found: the fusion to use and the held-out evidence for it."""

    chosen: FusionChoice  # the best on all the queries when adopted, else the default
    best: FusionChoice
    default: FusionChoice
    adopted: bool
    cv_ndcg: float  # mean nDCG@10 of the out-of-fold runs
    default_ndcg: float  # the default's, on the same queries
    wins: int
    losses: int
    p_value: float
    queries: int
    folds: int

    @property
    def cv_gain(self) -> float:
        return self.cv_ndcg - self.default_ndcg

    def entry(self) -> dict[str, Any]:
        """What the collection stores (``search.engine.FUSION_SETTING``)."""
        return {
            **self.chosen.entry(),
            "adopted": self.adopted,
            "best": self.best.entry(),
            "default": self.default.entry(),
            "cv_ndcg@10": round(self.cv_ndcg, 4),
            "default_ndcg@10": round(self.default_ndcg, 4),
            "cv_gain": round(self.cv_gain, 4),
            "wins": self.wins,
            "losses": self.losses,
            "p_value": round(self.p_value, 4),
            "queries": self.queries,
            "folds": self.folds,
        }


def explain(entry: Mapping[str, Any]) -> str:
    """One line on a stored choice, for ``sieve tune`` and ``sieve stats``."""
    evidence = (
        f"held-out nDCG@10 {entry['cv_ndcg@10']:.4f} vs the default's "
        f"{entry['default_ndcg@10']:.4f} over {entry['queries']} queries in {entry['folds']} "
        f"folds: {entry['wins']} wins, {entry['losses']} losses, p={entry['p_value']:.3g}"
    )
    best = FusionChoice.of(entry["best"]).label()
    if entry["adopted"]:
        return f"{FusionChoice.of(entry).label()} adopted ({evidence})"
    return f"the default kept: the best, {best}, did not beat it on held-out queries ({evidence})"


def fold_of(qid: str, folds: int) -> int:
    """A query's fold: a hash of its id, so the split is stable and needs no seed."""
    return int(hashlib.sha256(qid.encode()).hexdigest()[:8], 16) % folds


def _scores(qrels: Qrels, legs: Mapping[str, Legs], choice: FusionChoice) -> dict[str, float]:
    """nDCG@10 of each of ``legs``' queries fused by ``choice``."""
    scores = per_query(qrels, {qid: choice.apply(pair) for qid, pair in legs.items()})
    return {qid: row["ndcg@10"] for qid, row in scores.items()}


def _best(
    table: Mapping[FusionChoice, Mapping[str, float]], queries: Sequence[str]
) -> FusionChoice:
    """The candidate with the best mean nDCG@10 over ``queries`` (the first on a tie)."""
    best, top = next(iter(table)), float("-inf")
    for choice, scores in table.items():
        score = sum(scores[q] for q in queries) / len(queries)
        if score > top + 1e-12:
            best, top = choice, score
    return best


def tune(
    qrels: Qrels,
    legs: Mapping[str, Legs],
    default: FusionChoice,
    *,
    folds: int = 5,
    grid: Sequence[FusionChoice] | None = None,
) -> FusionTuning:
    """Cross-validate the grid against ``default`` (see the module docstring)."""
    judged = {q: legs[q] for q in legs if any(v > 0 for v in qrels.get(q, {}).values())}
    if len(judged) < max(MIN_QUERIES, folds):
        raise InvalidRequest(
            f"tuning fusion needs at least {max(MIN_QUERIES, folds)} judged queries; "
            f"got {len(judged)}"
        )
    # Each candidate fuses each query once; a fold only changes which queries count.
    table = {choice: _scores(qrels, judged, choice) for choice in (grid or list(candidates()))}
    base = _scores(qrels, judged, default)
    held_out: dict[str, float] = {}
    for fold in range(folds):
        test = [q for q in judged if fold_of(q, folds) == fold]
        train = [q for q in judged if fold_of(q, folds) != fold]
        if test and train:
            winner = table[_best(table, train)]
            held_out.update({q: winner[q] for q in test})
    wins = sum(held_out[q] > base[q] + TIE_EPSILON for q in held_out)
    losses = sum(held_out[q] < base[q] - TIE_EPSILON for q in held_out)
    cv = sum(held_out.values()) / len(held_out)
    base_mean = sum(base[q] for q in held_out) / len(held_out)
    p_value = sign_test(wins, losses)
    adopted = cv > base_mean and wins > losses and p_value < SIGNIFICANCE
    best = _best(table, list(judged))
    return FusionTuning(
        chosen=best if adopted else default,
        best=best,
        default=default,
        adopted=adopted,
        cv_ndcg=cv,
        default_ndcg=base_mean,
        wins=wins,
        losses=losses,
        p_value=p_value,
        queries=len(held_out),
        folds=folds,
    )


@dataclass(frozen=True)
class QueryLegs:
    """One query's two legs as each leg answers alone, and whether hybrid skips the vector one."""

    bm25: list[tuple[str, float]]
    vector: list[tuple[str, float]]
    skips_vector: bool

    def fused(self) -> Legs:
        """The legs fusion sees: no vector leg where hybrid search skips it."""
        return (self.bm25, [] if self.skips_vector else self.vector)


def judged_legs(
    engine: SearchEngine, queries: Mapping[str, str], collection: str
) -> dict[str, QueryLegs]:
    """Each query's two legs from ``engine``, to ``DEPTH``, and whether hybrid search
    skips the vector leg for it (``Pipeline.vector_skip``). A blank query is left out:
    the API refuses it, and trec_eval scores it 0 either way."""
    from search.types import SearchRequest

    pipeline = engine.collection(collection).pipeline

    def leg(text: str, mode: str) -> list[tuple[str, float]]:
        request = SearchRequest(query=text, mode=mode, top_k=DEPTH, collection=collection)  # type: ignore[arg-type]
        return [(hit.doc_id, hit.score) for hit in engine.search(request).hits]

    out: dict[str, QueryLegs] = {}
    for qid, text in queries.items():
        if text.strip():
            skips = pipeline.vector_skip(text) is not None
            out[qid] = QueryLegs(leg(text, "bm25"), leg(text, "vector"), skips)
    return out


SPLITS = ("train", "dev")


def tune_dataset(
    settings: Settings,
    dataset_dir: str,
    *,
    split: str = "train",
    folds: int = 5,
    limit: int | None = None,
    on_index_progress: Callable[[int], None] | None = None,
) -> tuple[FusionTuning, dict[str, Any]]:
    """Tune fusion on a BEIR-format data set's judged queries and store the choice.

    The corpus is indexed as ``sieve eval`` does (``search.evaluate.prepare_index``);
    the entry (``FusionTuning.entry`` and where it was chosen) is stored with
    ``settings.collection``, the collection the data set stands for. A served
    collection uses it from its next start when ``adopted``.
    """
    from search.engine import FUSION_SETTING, SearchEngine
    from search.evaluate import Dataset, prepare_index
    from search.registry import Registry

    if split not in SPLITS:
        raise InvalidRequest(
            f"tune on {' or '.join(SPLITS)}, not {split!r}: a split you evaluate on would "
            "grade the tuning on its own data"
        )
    if not 2 <= folds <= 20:
        raise InvalidRequest("folds must be from 2 to 20", folds=folds)
    dataset = Dataset.open(dataset_dir, split)
    qrels, queries = dataset.judged(limit)
    eval_settings = prepare_index(settings, dataset, on_index_progress)
    with SearchEngine(eval_settings) as engine:
        legs = {qid: q.fused() for qid, q in judged_legs(engine, queries, "eval").items()}
    default = FusionChoice(settings.fusion, settings.fusion_weights, settings.rrf_k)
    tuning = tune(qrels, legs, default, folds=folds)
    entry = {**tuning.entry(), "chosen_on": f"{dataset.name}/{split}"}
    registry = Registry(settings.registry)
    try:
        registry.set_collection_setting(settings.collection, FUSION_SETTING, entry)
    finally:
        registry.close()
    return tuning, entry
