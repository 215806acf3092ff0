"""Training data for a cross-encoder: judged queries, a split by query, mined negatives.

Pure functions over ids and texts: the retrieval that mines negatives and the
lookup of a document's text come in as callables (``search.finetune.source``
builds them from a data set folder or an indexed collection).

Hard negatives are the documents Sieve's own hybrid retrieval (no reranking)
ranks high for a query that the judgements do not mark relevant. Judgements
are rarely complete, so some of those are unjudged positives; training against
them would teach the model to push relevant passages down. Two guards:

- **near-duplicates of a positive are dropped** (always): a candidate whose
  word set overlaps a positive's by ``dedup_jaccard`` or more (default 0.8) is
  the same passage in another document, not a negative;
- **the top ``skip_top`` ranks are skipped** (default 0, off): on a small judged
  set the top ranks hold the hardest and most useful negatives, so it is a
  choice for data sets known to be sparsely judged (MS MARCO style).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from search.errors import InvalidRequest

Qrels = Mapping[str, Mapping[str, int]]
Retrieve = Callable[[str, int], list[str]]  # query text, depth -> doc ids, best first
TextOf = Callable[[str], str | None]  # doc id -> the text the reranker sees (None: unknown)

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class JudgedQueries:
    """Queries with their judgements (and, optionally, negatives a person chose)."""

    queries: Mapping[str, str]  # query id -> text
    qrels: Qrels  # query id -> {doc id: relevance}; > 0 is relevant
    given_negatives: Mapping[str, Sequence[str]] | None = None  # query id -> doc ids

    def positives(self, qid: str) -> list[str]:
        """The documents judged relevant to ``qid``."""
        return [doc for doc, rel in self.qrels.get(qid, {}).items() if rel > 0]

    def judged(self) -> list[str]:
        """Query ids with at least one positive, in a stable order."""
        return sorted(qid for qid in self.queries if self.positives(qid))


@dataclass(frozen=True)
class TrainingGroup:
    """One listwise example: a query, one positive passage and ``n`` negative passages."""

    query_id: str
    query: str
    positive: str
    negatives: tuple[str, ...]


@dataclass(frozen=True)
class Split:
    """Query ids for training and for validation (held out by query)."""

    train: tuple[str, ...]
    validation: tuple[str, ...]


def split_by_query(qids: Sequence[str], val_fraction: float, seed: int = 0) -> Split:
    """Hold out ``val_fraction`` of the queries (at least one when any is asked for).

    The order comes from a hash of ``seed`` and each id, so the split of a query
    does not change when others are added or the file is reordered.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise InvalidRequest("the validation fraction must be in [0, 1)", value=val_fraction)
    ordered = sorted(qids, key=lambda q: hashlib.sha256(f"{seed}:{q}".encode()).hexdigest())
    n_val = (
        0 if val_fraction == 0 or len(ordered) < 2 else max(1, round(len(ordered) * val_fraction))
    )
    validation, train = ordered[:n_val], ordered[n_val:]
    return Split(tuple(sorted(train)), tuple(sorted(validation)))


def words(text: str) -> frozenset[str]:
    """The lower-cased word set of a text (CJK text: its characters)."""
    tokens = _WORD.findall(text.lower())
    out: set[str] = set()
    for token in tokens:
        # \w+ runs whole CJK phrases together; their characters are the words.
        out.update(token if any("\u3400" <= ch <= "\u9fff" for ch in token) else [token])
    return frozenset(out)


def near_duplicate(a: frozenset[str], b: frozenset[str], threshold: float) -> bool:
    """Whether two word sets overlap by ``threshold`` or more (Jaccard)."""
    if not a or not b:
        return a == b
    return len(a & b) / len(a | b) >= threshold


def mine_negatives(
    data: JudgedQueries,
    qids: Iterable[str],
    retrieve: Retrieve,
    text_of: TextOf,
    *,
    depth: int = 30,
    skip_top: int = 0,
    dedup_jaccard: float = 0.8,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, list[str]]:
    """Per query, hard negative doc ids from the hybrid top ``depth``, best first.

    Judged positives are excluded (a document judged 0 is a true negative and
    may stay); see the module docstring for the two guards against unjudged
    positives. Negatives the caller gave come first.
    """
    pools: dict[str, list[str]] = {}
    for qid in qids:
        positives = set(data.positives(qid))
        positive_words = [words(t) for t in (text_of(d) for d in positives) if t]
        given = list((data.given_negatives or {}).get(qid, ()))
        pool: list[str] = [d for d in given if d not in positives]
        for doc in retrieve(data.queries[qid], depth)[skip_top:]:
            if doc in positives or doc in pool:
                continue
            text = text_of(doc)
            if not text:
                continue
            candidate = words(text)
            if any(near_duplicate(candidate, p, dedup_jaccard) for p in positive_words):
                continue
            pool.append(doc)
        pools[qid] = pool
        if on_progress is not None:
            on_progress(1)
    return pools


def build_groups(
    data: JudgedQueries,
    qids: Iterable[str],
    pools: Mapping[str, Sequence[str]],
    text_of: TextOf,
    n_negatives: int,
    rng: random.Random,
    filler: Sequence[str] = (),
) -> list[TrainingGroup]:
    """One group per (query, positive), shuffled: ``n_negatives`` sampled from the query's pool.

    A pool smaller than ``n_negatives`` is topped up with random ``filler``
    documents (the rest of the corpus) that are not positives; a query with no
    negative at all is left out.
    """
    groups: list[TrainingGroup] = []
    for qid in qids:
        positives = data.positives(qid)
        pool = list(pools.get(qid, ()))
        for positive in positives:
            text = text_of(positive)
            if not text:
                continue
            chosen = rng.sample(pool, min(n_negatives, len(pool)))
            spare = [d for d in filler if d not in chosen and d not in positives]
            while len(chosen) < n_negatives and spare:
                chosen.append(spare.pop(rng.randrange(len(spare))))
            texts = tuple(t for t in (text_of(d) for d in chosen) if t)
            if texts:
                groups.append(TrainingGroup(qid, data.queries[qid], text, texts))
    rng.shuffle(groups)
    return groups


def data_fingerprint(corpus_digest: str, data: JudgedQueries, split: Split) -> str:
    """A short hash of the corpus, the judgements and the split: same data, same value."""
    qrels = {q: dict(sorted(rels.items())) for q, rels in sorted(data.qrels.items())}
    payload = {
        "corpus": corpus_digest,
        "qrels": qrels,
        "negatives": {q: list(v) for q, v in sorted((data.given_negatives or {}).items())},
        "train": list(split.train),
        "validation": list(split.validation),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
