"""Cross-encoder reranking, by role.

- ``base``: the ``Reranker`` protocol, ``sigmoid`` (logit -> score) and
  ``check_scores`` (one score per passage);
- ``pairs``: (query, passage window) model inputs and their character offsets;
- ``cross_encoder``: ``CrossEncoderReranker``, the in-process model runner;
- ``caching``: ``CachingReranker``, any reranker in front of a pair-score store
  (the stores and keys are ``search.scores``).

Importing this package imports neither torch nor transformers.
"""

from search.rerank.base import Reranker, check_scores, sigmoid
from search.rerank.caching import CachingReranker
from search.rerank.cross_encoder import CrossEncoderReranker

__all__ = ["CachingReranker", "CrossEncoderReranker", "Reranker", "check_scores", "sigmoid"]
