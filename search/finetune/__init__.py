"""Fine-tuning a cross-encoder reranker on judged queries (``sieve finetune``).

``data`` turns judgements into listwise training groups with hard negatives
mined by Sieve's own hybrid retrieval, ``source`` reads the judgements (a BEIR
folder, or a pairs file over an indexed collection), ``model`` wraps the
network being trained, ``validation`` scores the held-out queries, and
``train`` runs the loop and writes the model folder with its card
(``sieve-model.json``).
"""

from search.finetune.data import JudgedQueries, Split, TrainingGroup, split_by_query
from search.finetune.train import Evaluation, FinetuneConfig, FinetuneResult, Step, finetune

__all__ = [
    "Evaluation",
    "FinetuneConfig",
    "FinetuneResult",
    "JudgedQueries",
    "Split",
    "Step",
    "TrainingGroup",
    "finetune",
    "split_by_query",
]
