"""Cross-encoder reranking, by role.

- ``base``: the ``Reranker`` protocol, ``sigmoid`` (logit -> score) and
  ``check_scores`` (one score per passage);
- ``pairs``: (query, passage window) model inputs and their character offsets;
- ``cross_encoder``: ``CrossEncoderReranker``, the in-process model runner;
- ``bounded``: ``BoundedReranker``, which stops the caller's wait at a deadline;
- ``caching``: ``CachingReranker``, any reranker in front of a pair-score store
  (the stores and keys are ``search.scores``);
- ``calibration``: ``Calibration``, a fitted logit -> P(relevant) map stored beside
  the model and keyed to its fingerprint (scikit-learn only when fitting).

Importing this package imports neither torch nor transformers.
"""

from search.rerank.base import Reranker, check_scores, sigmoid
from search.rerank.bounded import BoundedReranker
from search.rerank.caching import CachingReranker
from search.rerank.cross_encoder import CrossEncoderReranker

__all__ = [
    "BoundedReranker",
    "CachingReranker", "CrossEncoderReranker", "Reranker", "check_scores",
    "sigmoid",
]
