"""The cross-encoder being trained: loading a start checkpoint, forward passes, saving.

Pairs are built by ``search.rerank.pairs.PairEncoder``, the encoder the
reranker uses at query time, so that training sees exactly the inputs serving
will (special tokens, the query budget, passage-only truncation). Training
takes each passage's first window; scoring, as at query time, the best window.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from search.errors import ModelIncompatible
from search.finetune.data import TrainingGroup
from search.rerank.pairs import Pair, PairEncoder, best_windows

# Pairs per forward pass when scoring: small enough for a CPU, plenty for a GPU.
SCORE_BATCH = 64
_MASKED = -1e4  # the logit of a missing negative: softmax gives it no weight


class CrossEncoder:
    """A sequence-classification model with one logit, its tokenizer and its pair encoder."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        max_length: int,
        query_share: float,
        *,
        new_keys: frozenset[str] = frozenset(),
    ) -> None:
        if not tokenizer.is_fast:
            raise ModelIncompatible("the start model has no fast tokenizer (needed for pairs)")
        backend = tokenizer.backend_tokenizer
        # PairEncoder builds pairs by hand; a tokenizer.json may carry these settings.
        backend.no_truncation()
        backend.no_padding()
        self.model = model
        self.tokenizer = tokenizer
        self.encoder = PairEncoder(backend, max_length, query_share)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.uses_type_ids = "token_type_ids" in tokenizer.model_input_names
        # The parameters initialised here rather than loaded (a plain encoder's new
        # head): until trained, the model's scores are noise.
        self.new_keys = new_keys

    @property
    def new_head(self) -> bool:
        """Whether any parameter was initialised here (a plain encoder's new head)."""
        return bool(self.new_keys)

    @classmethod
    def load(
        cls, folder: Path, *, max_length: int = 256, query_share: float = 0.25
    ) -> CrossEncoder:
        """A reranker folder as it is, or a plain encoder given a new one-logit head.

        ``num_labels=1`` keeps a one-label classifier's head; a model without
        a head (or with another label count) gets a freshly initialised one.
        """
        import transformers
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        # A plain encoder's missing head is expected: that warning says nothing here.
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
                str(folder),
                num_labels=1,
                ignore_mismatched_sizes=True,
                local_files_only=True,
                output_loading_info=True,
            )
        finally:
            hf_logging.set_verbosity(level)
        limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
        if 0 < limit < max_length:
            max_length = limit
        mismatched = [k if isinstance(k, str) else k[0] for k in info.get("mismatched_keys", ())]
        new_keys = frozenset([*info.get("missing_keys", ()), *mismatched])
        return cls(model, tokenizer, max_length, query_share, new_keys=new_keys)

    @property
    def device(self) -> Any:
        """Where the model's weights are."""
        return next(self.model.parameters()).device

    def inputs(self, pairs: Sequence[Pair]) -> dict[str, Any]:
        """Padded tensors for ``pairs``, on the model's device."""
        import torch

        width = max(len(p.ids) for p in pairs)
        pad = [width - len(p.ids) for p in pairs]
        out = {
            "input_ids": torch.tensor(
                [p.ids + [self.pad_id] * n for p, n in zip(pairs, pad, strict=True)]
            ),
            "attention_mask": torch.tensor(
                [[1] * len(p.ids) + [0] * n for p, n in zip(pairs, pad, strict=True)]
            ),
        }
        if self.uses_type_ids:
            out["token_type_ids"] = torch.tensor(
                [p.type_ids + [0] * n for p, n in zip(pairs, pad, strict=True)]
            )
        return {k: v.to(self.device) for k, v in out.items()}

    def group_logits(self, groups: Sequence[TrainingGroup]) -> Any:
        """A ``(groups, 1 + most negatives)`` float tensor; column 0 is the positive."""
        import torch

        pairs: list[Pair] = []
        slots: list[tuple[int, int]] = []
        for row, group in enumerate(groups):
            first: dict[int, Pair] = {}
            for pair in self.encoder.encode(group.query, [group.positive, *group.negatives]):
                first.setdefault(pair.index, pair)  # the passage's first window
            for column in sorted(first):
                pairs.append(first[column])
                slots.append((row, column))
        logits = self.model(**self.inputs(pairs)).logits[:, 0].float()
        width = 1 + max(len(g.negatives) for g in groups)
        table = torch.full((len(groups), width), _MASKED, device=logits.device)
        rows = torch.tensor([r for r, _ in slots], device=logits.device)
        columns = torch.tensor([c for _, c in slots], device=logits.device)
        return table.index_put((rows, columns), logits)

    def loss(self, groups: Sequence[TrainingGroup]) -> Any:
        """Listwise loss: softmax cross-entropy of the positive against its negatives."""
        import torch

        logits = self.group_logits(groups)
        target = torch.zeros(len(groups), dtype=torch.long, device=logits.device)
        return torch.nn.functional.cross_entropy(logits, target)

    def window_logits(self, query: str, passages: Sequence[str]) -> tuple[list[Pair], list[float]]:
        """Every window's pair and logit, window by window, in inference mode."""
        import torch

        if not passages:
            return [], []
        pairs = self.encoder.encode(query, passages)
        logits: list[float] = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(pairs), SCORE_BATCH):
                    batch = pairs[start : start + SCORE_BATCH]
                    out = self.model(**self.inputs(batch)).logits[:, 0].float().cpu().tolist()
                    logits.extend(float(x) for x in out)
        finally:
            self.model.train(was_training)
        return pairs, logits

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """One logit per passage (its best window), in inference mode."""
        pairs, logits = self.window_logits(query, passages)
        return [logit for logit, _ in best_windows(pairs, logits, len(passages))]

    def save(self, folder: Path) -> None:
        """Weights, config and tokenizer files, loadable by ``CrossEncoderReranker``."""
        self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))
