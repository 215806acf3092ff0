"""Cross-encoder inputs: (query, passage window) pairs of token ids, and where each came from.

The query keeps at most its share of the window (passage-only truncation beyond
that, but never less than ``MIN_PASSAGE_TOKENS`` of room for the passage); a
passage longer than the room left is cut into overlapping windows on word
boundaries, each with its character offsets into the passage, and is scored by
its best window (``best_windows``). Only a passage's first ``MAX_DOC_TOKENS``
tokens are scored (Cohere's default ``max_tokens_per_doc``): the cost of one
passage is bounded, so one huge document cannot hold the model. Works on a
fast tokenizer's ``tokenizers`` backend; imports neither torch nor transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.batching import batched
from search.errors import InvalidRequest
from search.model_folders import read_card
from search.rerank.base import stop_at

# Tokens per pair when neither the setting nor the model's card says otherwise
# (bge-reranker-v2-m3's published serving length).
DEFAULT_MAX_LENGTH = 512

# Room always left for the passage, whatever the query share: a pair whose
# passage gets a handful of tokens would score the query against nothing.
MIN_PASSAGE_TOKENS = 8
# The most of one passage that is tokenised and scored, and a character cut
# made first so that a 5 MB document is never tokenised whole: no tokenizer
# Sieve uses makes tokens of more than 16 characters of ordinary text.
MAX_DOC_TOKENS = 4096
MAX_DOC_CHARS = MAX_DOC_TOKENS * 16  # a lower token limit cuts at 16 characters a token too
# Passages tokenised per step: a deadline is checked between steps (a thousand
# long passages take a second or more to tokenise on a CPU).
ENCODE_STEP = 256

# (token id, token type id) of each special token in one part of the template.
_Specials = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Pair:
    """One (query, passage window) model input; ``start``/``end`` are character offsets."""

    index: int  # which passage
    ids: list[int]
    type_ids: list[int]
    start: int
    end: int


@dataclass(frozen=True)
class PairTemplate:
    """Where a tokenizer puts special tokens around a (query, passage) pair.

    transformers 5 dropped ``prepare_for_model`` and
    ``build_inputs_with_special_tokens`` from fast tokenizers, so pairs are
    built by hand from this template (``<s> A </s></s> B </s>`` for XLM-R,
    ``[CLS] A [SEP] B [SEP]`` for BERT), read off one encoded probe pair.
    """

    prefix: _Specials
    middle: _Specials
    suffix: _Specials
    type_a: int  # token type id of the query's tokens
    type_b: int  # and of the passage's

    @classmethod
    def read(cls, backend: Any) -> PairTemplate:
        """The template of ``backend`` (a ``tokenizers.Tokenizer``)."""
        probe = backend.encode("query", "passage", add_special_tokens=True)
        parts: list[list[tuple[int, int]]] = [[], [], []]
        part, type_a, type_b = 0, 0, 0
        for token, type_id, seq in zip(probe.ids, probe.type_ids, probe.sequence_ids, strict=True):
            if seq is None:
                parts[part].append((token, type_id))
            elif seq == 0:
                part, type_a = 1, type_id
            else:
                part, type_b = 2, type_id
        prefix, middle, suffix = (tuple(p) for p in parts)
        return cls(prefix, middle, suffix, type_a, type_b)

    @property
    def n_special(self) -> int:
        """How many special tokens every pair carries."""
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def windows(words: Sequence[int | None], room: int) -> list[tuple[int, int]]:
    """Token spans of at most ``room`` tokens covering a passage, overlapping by a quarter.

    Spans start and end on word boundaries (``words`` is the tokenizer's word id
    per token) so that the returned character offsets make a readable snippet
    that tokenises back to the same tokens; a word longer than a span is cut.
    """

    def word_start(i: int, floor: int) -> int:
        j = i
        while j > floor and words[j] is not None and words[j] == words[j - 1]:
            j -= 1
        return j if j > floor else i

    spans: list[tuple[int, int]] = []
    begin = 0
    while True:
        end = len(words) if begin + room >= len(words) else word_start(begin + room, begin + 1)
        spans.append((begin, end))
        if end >= len(words):
            return spans
        begin = word_start(max(end - room // 4, begin + 1), begin + 1)


def serving_max_length(setting: int | None, folder: Path | None) -> int:
    """The pair length to serve a model at: the setting, else its card's, else 512.

    A model ``sieve finetune`` made learnt from pairs of its card's
    ``hyperparameters.max_length``; serving it at another length scores inputs
    it never saw (its blend weight and calibration were fitted at that length).
    """
    if setting is not None:
        return setting
    if folder is not None:
        trained = (read_card(folder).get("hyperparameters") or {}).get("max_length")
        if isinstance(trained, int) and trained >= 16:
            return trained
    return DEFAULT_MAX_LENGTH


class PairEncoder:
    """Builds the pairs for one tokenizer, each at most ``max_length`` tokens."""

    def __init__(self, backend: Any, max_length: int, query_share: float) -> None:
        self.backend = backend  # a tokenizers.Tokenizer, without truncation or padding
        self.template = PairTemplate.read(backend)
        self.max_length = max_length
        self.query_share = query_share

    def encode(
        self,
        query: str,
        passages: Sequence[str],
        deadline: float | None = None,
        max_doc_tokens: int | None = None,
    ) -> list[Pair]:
        """Tokenise once; one pair per passage window.

        Only each passage's first ``max_doc_tokens`` tokens are scored (capped
        at, and by default, ``MAX_DOC_TOKENS``). Stops between steps of
        ``ENCODE_STEP`` passages once ``deadline`` (a ``time.monotonic()``
        instant) has passed (``BackendUnavailable``).
        """
        limit = doc_token_limit(max_doc_tokens)
        t = self.template
        query_budget = min(
            int(self.query_share * self.max_length),
            self.max_length - t.n_special - MIN_PASSAGE_TOKENS,
        )
        query_ids = self.backend.encode(query, add_special_tokens=False).ids[: max(query_budget, 0)]
        room = self.max_length - t.n_special - len(query_ids)  # passage-only truncation
        head = [k for k, _ in t.prefix] + query_ids + [k for k, _ in t.middle]
        head_types = (
            [k for _, k in t.prefix] + [t.type_a] * len(query_ids) + [k for _, k in t.middle]
        )
        tail, tail_types = [k for k, _ in t.suffix], [k for _, k in t.suffix]
        pairs: list[Pair] = []
        texts = [p[: limit * 16] for p in passages]  # see MAX_DOC_CHARS
        encodings: list[Any] = []
        for step in batched(texts, ENCODE_STEP):
            stop_at(deadline, f"{len(encodings)} of {len(texts)} passages tokenised")
            encodings += self.backend.encode_batch(step, add_special_tokens=False)
        for index, (text, encoding) in enumerate(zip(texts, encodings, strict=True)):
            ids, offsets = encoding.ids[:limit], encoding.offsets[:limit]
            words = encoding.word_ids[:limit]
            cut = len(ids) < len(encoding.ids) or len(text) < len(passages[index])
            for begin, end in windows(words, room):
                window = ids[begin:end]
                whole = len(window) == len(ids) and not cut
                pairs.append(
                    Pair(
                        index,
                        head + window + tail,
                        head_types + [t.type_b] * len(window) + tail_types,
                        0 if whole else offsets[begin][0],
                        len(text) if whole else offsets[end - 1][1],
                    )
                )
        return pairs


def doc_token_limit(max_doc_tokens: int | None) -> int:
    """How many of a passage's tokens are scored: ``max_doc_tokens``, at most ``MAX_DOC_TOKENS``."""
    if max_doc_tokens is None:
        return MAX_DOC_TOKENS
    if max_doc_tokens < 1:
        raise InvalidRequest(f"max_doc_tokens must be >= 1, not {max_doc_tokens}")
    return min(max_doc_tokens, MAX_DOC_TOKENS)


def best_windows(
    pairs: Sequence[Pair], logits: Sequence[float], count: int
) -> list[tuple[float, Pair]]:
    """Per passage (``0 .. count-1``), the highest logit of its windows and that window."""
    best: dict[int, tuple[float, Pair]] = {}
    for pair, logit in zip(pairs, logits, strict=True):
        if pair.index not in best or logit > best[pair.index][0]:
            best[pair.index] = (logit, pair)
    return [best[i] for i in range(count)]
