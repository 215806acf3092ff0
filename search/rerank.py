"""Cross-encoder reranking: the ``Reranker`` contract and the in-process implementation.

The pipeline holds "a reranker" and never knows which: the in-process
``CrossEncoderReranker`` below, the Celery client in ``workers/``, or either
wrapped by ``search.cache.CachingReranker``.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from search.errors import (
    BackendUnavailable,
    ConfigError,
    InvalidRequest,
    ModelIncompatible,
    ModelNotFound,
)
from search.types import RerankBatch, RerankScore

if TYPE_CHECKING:
    from search.config import Settings


@runtime_checkable
class Reranker(Protocol):
    """Scores (query, passage) pairs with a cross-encoder."""

    @property
    def model_key(self) -> str:
        """Identifies the scores: model id, revision and max_length (the cache keys on it)."""
        ...

    def rerank(self, query: str, passages: Sequence[str]) -> RerankBatch:
        """One score per passage, in the passages' order.

        Raises ``search.errors.BackendUnavailable`` when the reranker cannot
        answer (down, late, model missing); the pipeline then degrades.
        """
        ...


# Room always left for the passage, whatever the query share: a pair whose
# passage gets a handful of tokens would score the query against nothing.
MIN_PASSAGE_TOKENS = 8
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float16", "bfloat16", "float32")
# Files whose change changes the scores: weights, config and tokenizer.
FINGERPRINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".model", ".json")
_SAMPLE_BYTES = 1 << 20
_FP16_ON_CPU = (
    "float16 is only used on CUDA (CPU kernels for it are slow or missing); "
    "on CPU set SIEVE_RERANK_DTYPE to float32 or bfloat16"
)


@dataclass(frozen=True)
class _Pair:
    """One (query, passage window) model input; ``start``/``end`` are character offsets."""

    index: int  # which passage
    ids: list[int]
    type_ids: list[int]
    start: int
    end: int


@dataclass(frozen=True)
class _Located:
    path: Path  # a local folder holding config.json
    commit: str  # Hugging Face snapshot commit; "" for a plain folder
    hub_id: str  # model id to fetch missing files with; "" for a plain folder


def _major(version: str) -> int:
    """Leading integer of a version string ("4.38.1" -> 4, "5.0.0rc1" -> 5); 0 if none."""
    digits = ""
    for char in version.strip():
        if not char.isdigit():
            break
        digits += char
    return int(digits or 0)


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)  # the mirrored form does not overflow for very negative logits
    return z / (1.0 + z)


def _fingerprint(folder: Path) -> str:
    """A short hash of a model folder's config, tokenizer and weight files.

    Sizes alone cannot tell a fine-tuned copy from the original (same shapes,
    same sizes) and hashing gigabytes would stall the first query, so each file
    contributes its name, size and its first and last mebibyte.
    """
    digest = hashlib.sha256()
    for file in sorted(folder.iterdir()):
        if not (file.is_file() and file.suffix in FINGERPRINT_SUFFIXES):
            continue
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}\n".encode())
        with file.open("rb") as handle:
            digest.update(handle.read(_SAMPLE_BYTES))
            if size > _SAMPLE_BYTES:
                handle.seek(max(_SAMPLE_BYTES, size - _SAMPLE_BYTES))
                digest.update(handle.read())
    return digest.hexdigest()[:12]


def _windows(words: Sequence[int | None], room: int) -> list[tuple[int, int]]:
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


class CrossEncoderReranker:
    """In-process cross-encoder (BAAI/bge-reranker-v2-m3 or any one-label classifier).

    Construction is free: torch and transformers are imported, and the model
    found and loaded, on the first ``rerank`` or an explicit ``warm_up`` (Celery
    calls it after the fork). FP16 only on CUDA, set once at load; passage-only
    truncation with a query budget; passages longer than the window are scored
    by their best window; length-sorted batches under a padded-token budget;
    CUDA out-of-memory halves the batch. No other error is swallowed.
    """

    def __init__(
        self,
        model: str = "BAAI/bge-reranker-v2-m3",
        *,
        models_dir: Path = Path("models"),
        revision: str = "",
        device: str = "auto",
        dtype: str = "auto",
        max_length: int = 512,
        query_share: float = 0.25,
        token_budget: int = 16384,
        allow_download: bool = False,
    ) -> None:
        if device.split(":")[0] not in DEVICES:
            raise ConfigError(
                f"reranker device {device!r} is not valid; choose auto, cpu, cuda or cuda:N",
                value=device,
            )
        if dtype not in DTYPES:
            raise ConfigError(
                f"reranker dtype {dtype!r} is not valid; choose one of {', '.join(DTYPES)}",
                value=dtype,
            )
        if dtype == "float16" and device == "cpu":
            raise ConfigError(_FP16_ON_CPU, value=dtype)
        if not 0.0 < query_share < 1.0:
            raise ConfigError("reranker query_share must be between 0 and 1", value=query_share)
        if max_length < 16 or token_budget < 1:
            raise ConfigError("reranker max_length must be >= 16 and token_budget >= 1")
        self.model = model
        self.models_dir = Path(models_dir)
        self.revision = revision
        self.device = device
        self.dtype = dtype
        self.max_length = max_length
        self.query_share = query_share
        self.token_budget = token_budget
        self.allow_download = allow_download
        self._load_lock = threading.Lock()
        # One forward pass at a time per model: concurrent passes on one device
        # only compete for the same cores or the same GPU memory.
        self._forward_lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._device = "cpu"
        self._located: _Located | None = None
        self._key: str | None = None
        # Filled at load from the tokenizer's own pair template.
        self._prefix: list[tuple[int, int]] = []
        self._middle: list[tuple[int, int]] = []
        self._suffix: list[tuple[int, int]] = []
        self._type_a = self._type_b = self._pad_id = 0
        self._uses_type_ids = False

    @classmethod
    def from_settings(cls, settings: Settings) -> CrossEncoderReranker:
        """The reranker the ``SIEVE_RERANK_*`` settings describe (nothing loaded yet)."""
        return cls(
            settings.rerank_model,
            models_dir=settings.rerank_models_dir,
            revision=settings.rerank_revision,
            device=settings.rerank_device,
            dtype=settings.rerank_dtype,
            max_length=settings.rerank_max_length,
            query_share=settings.rerank_query_share,
            token_budget=settings.rerank_token_budget,
            allow_download=settings.allow_download,
        )

    @property
    def model_key(self) -> str:
        """``model@revision:max_length``; the revision is derived from the files when not set.

        Reads config.json (and samples the weight files) but loads nothing. A
        model that cannot be found gives ``model@unresolved:max_length`` rather
        than raising: ``isinstance(x, Reranker)`` reads this property on Python
        3.11, and no score can be stored under that key since ``rerank`` fails.
        """
        if self._key is None:
            try:
                located = self._locate()
            except ModelNotFound:
                return f"{self.model}@unresolved:{self.max_length}"
            revision = self.revision or located.commit
            if not revision:
                raw = json.loads((located.path / "config.json").read_text(encoding="utf-8"))
                revision = str(raw.get("_commit_hash") or "") or _fingerprint(located.path)
            self._key = f"{self.model}@{revision}:{self.max_length}"
        return self._key

    def warm_up(self) -> None:
        """Find and load the model now; raises ``ModelNotFound`` or ``ModelIncompatible``."""
        self._load()

    def rerank(self, query: str, passages: Sequence[str]) -> RerankBatch:
        """One raw logit (and its sigmoid) per passage, in the passages' order."""
        if isinstance(passages, str) or not all(isinstance(p, str) for p in passages):
            raise InvalidRequest("passages must be a sequence of strings")
        if not passages:
            return RerankBatch([])
        try:
            self._load()
        except (ModelNotFound, ModelIncompatible) as exc:
            # The Reranker contract: a reranker that cannot answer is "unavailable",
            # and the pipeline degrades; the typed cause stays attached.
            raise BackendUnavailable(str(exc), backend="rerank", model=self.model) from exc
        started = time.perf_counter()
        pairs = self._encode(query, passages)
        logits = self._score(pairs)
        best: dict[int, tuple[float, _Pair]] = {}
        for pair, logit in zip(pairs, logits, strict=True):
            if pair.index not in best or logit > best[pair.index][0]:
                best[pair.index] = (logit, pair)
        scores = [
            RerankScore(logit=logit, score=_sigmoid(logit), start=pair.start, end=pair.end)
            for logit, pair in (best[i] for i in range(len(passages)))
        ]
        # "model": tokenising plus the forward passes, i.e. all the work done here.
        return RerankBatch(scores, timings_ms={"model": (time.perf_counter() - started) * 1e3})

    def available(self) -> bool:
        """Whether the model is on this machine (a folder or the Hugging Face cache).

        Never downloads and loads nothing: ``rerank_backend=auto`` uses it to
        decide between in-process reranking and none.
        """
        try:
            self._locate(download=False)
        except ModelNotFound:
            return False
        return True

    def _locate(self, *, download: bool | None = None) -> _Located:
        """Find the model's folder offline, or its config on the hub if downloads are allowed."""
        if self._located is not None:
            return self._located
        download = self.allow_download if download is None else download
        looked: list[str] = []
        name = Path(self.model).expanduser()
        for folder in (
            name,
            self.models_dir / self.model,
            self.models_dir / self.model.split("/")[-1],
            self.models_dir,
        ):
            if (folder / "config.json").is_file():
                self._located = _Located(folder, "", "")
                return self._located
            looked.append(f"{folder} ({'no config.json' if folder.is_dir() else 'missing'})")
        looked.append(f"the Hugging Face cache for {self.model!r}")
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
        from huggingface_hub.errors import EntryNotFoundError

        revision = self.revision or None
        try:
            found = try_to_load_from_cache(self.model, "config.json", revision=revision)
            if not isinstance(found, str) and download:
                looked.append("the Hugging Face hub")
                found = hf_hub_download(self.model, "config.json", revision=revision)
        except (OSError, ValueError, EntryNotFoundError) as exc:  # bad id, offline, no repo
            looked.append(f"({type(exc).__name__}: {exc})")
            found = None
        if isinstance(found, str):
            snapshot = Path(found).parent  # .../snapshots/<commit>/config.json
            self._located = _Located(snapshot, snapshot.name, self.model)
            return self._located
        raise ModelNotFound(
            f"reranker model {self.model!r} not found; looked in: {'; '.join(looked)}. "
            "Put it in SIEVE_RERANK_MODELS_DIR, set SIEVE_RERANK_MODEL to its folder, "
            "or allow downloads with SIEVE_ALLOW_DOWNLOAD=1.",
            model=self.model,
            looked=looked,
        )

    def _load(self) -> None:
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is not None:
                return
            import torch
            import transformers
            from transformers.utils import logging as hf_logging

            # A library call must not draw progress bars on the caller's terminal.
            hf_logging.disable_progress_bar()
            located = self._locate()
            device, dtype = self._device_and_dtype(torch)
            installed = f"transformers {transformers.__version__}, torch {torch.__version__}"
            raw = json.loads((located.path / "config.json").read_text(encoding="utf-8"))
            saved = str(raw.get("transformers_version") or "0")
            needs = f"{self.model} (model_type {raw.get('model_type')!r}, transformers {saved})"

            def incompatible(message: str) -> ModelIncompatible:
                return ModelIncompatible(message, model=self.model, installed=installed)

            if not hasattr(torch.nn.functional, "scaled_dot_product_attention"):
                raise incompatible(f"{installed}: {needs} needs torch >= 2.0 (SDPA)")
            if _major(saved) > _major(transformers.__version__):
                raise incompatible(
                    f"{installed} is too old for {needs}; install transformers >= {saved}"
                )
            hub = bool(located.hub_id and self.allow_download)
            source = located.hub_id if hub else str(located.path)
            where: dict[str, Any] = (
                {"revision": located.commit} if hub else {"local_files_only": True}
            )
            try:
                config = transformers.AutoConfig.from_pretrained(source, **where)
            except (KeyError, ValueError) as exc:  # how transformers says "unknown model_type"
                raise incompatible(f"{installed} cannot read {needs}: {exc}") from exc
            if config.num_labels != 1:
                raise incompatible(f"{needs} has {config.num_labels} labels; a reranker needs 1")
            # transformers 4.56 renamed torch_dtype to dtype (the old name warns in 5.x).
            new_api = tuple(map(_major, transformers.__version__.split(".")[:2])) >= (4, 56)
            dtype_kw = "dtype" if new_api else "torch_dtype"
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(source, **where)
                model = transformers.AutoModelForSequenceClassification.from_pretrained(
                    source, config=config, attn_implementation="sdpa", **{dtype_kw: dtype}, **where
                )
            except OSError as exc:
                raise ModelNotFound(
                    f"could not load reranker {self.model} from {source}: {exc}", model=self.model
                ) from exc
            except ValueError as exc:  # e.g. an architecture without SDPA support
                raise incompatible(f"{installed} cannot load {needs}: {exc}") from exc
            if not tokenizer.is_fast:
                raise incompatible(f"{needs}: no fast tokenizer (needed for offsets)")
            limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
            if 0 < limit < self.max_length:
                raise ConfigError(
                    f"reranker max_length {self.max_length} exceeds {self.model}'s {limit} tokens",
                    value=self.max_length,
                )
            # Our own pair building below; settings left on the shared backend by
            # tokenizer.json or an earlier __call__ must not truncate or pad for us.
            tokenizer.backend_tokenizer.no_truncation()
            tokenizer.backend_tokenizer.no_padding()
            self._read_template(tokenizer)
            self._tokenizer = tokenizer
            self._device = device
            self._model = model.to(device).eval()

    def _device_and_dtype(self, torch: Any) -> tuple[str, Any]:
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        on_cuda = device.startswith("cuda")
        if on_cuda and not torch.cuda.is_available():
            raise ConfigError(f"reranker device {device!r} asked for, but CUDA is not available")
        name = self.dtype if self.dtype != "auto" else ("float16" if on_cuda else "float32")
        if name == "float16" and not on_cuda:
            raise ConfigError(_FP16_ON_CPU, value=self.dtype)
        return device, getattr(torch, name)

    def _read_template(self, tokenizer: Any) -> None:
        """Learn where the tokenizer puts special tokens around a (query, passage) pair.

        transformers 5 dropped ``prepare_for_model`` and
        ``build_inputs_with_special_tokens`` from fast tokenizers, so pairs are
        built by hand from this template (``<s> A </s></s> B </s>`` for XLM-R,
        ``[CLS] A [SEP] B [SEP]`` for BERT), read off one encoded probe pair.
        """
        probe = tokenizer.backend_tokenizer.encode("query", "passage", add_special_tokens=True)
        parts: list[list[tuple[int, int]]] = [[], [], []]
        part = 0
        for token, type_id, seq in zip(probe.ids, probe.type_ids, probe.sequence_ids, strict=True):
            if seq is None:
                parts[part].append((token, type_id))
            elif seq == 0:
                part, self._type_a = 1, type_id
            else:
                part, self._type_b = 2, type_id
        self._prefix, self._middle, self._suffix = parts
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._uses_type_ids = "token_type_ids" in tokenizer.model_input_names

    def _encode(self, query: str, passages: Sequence[str]) -> list[_Pair]:
        """Tokenise once; one pair per passage window, each at most ``max_length`` tokens."""
        backend = self._tokenizer.backend_tokenizer
        n_special = len(self._prefix) + len(self._middle) + len(self._suffix)
        query_budget = min(
            int(self.query_share * self.max_length),
            self.max_length - n_special - MIN_PASSAGE_TOKENS,
        )
        query_ids = backend.encode(query, add_special_tokens=False).ids[: max(query_budget, 0)]
        room = self.max_length - n_special - len(query_ids)  # passage-only truncation
        head = [t for t, _ in self._prefix] + query_ids + [t for t, _ in self._middle]
        head_types = (
            [k for _, k in self._prefix]
            + [self._type_a] * len(query_ids)
            + [k for _, k in self._middle]
        )
        tail, tail_types = [t for t, _ in self._suffix], [k for _, k in self._suffix]
        pairs: list[_Pair] = []
        encodings = backend.encode_batch(list(passages), add_special_tokens=False)
        for index, (text, encoding) in enumerate(zip(passages, encodings, strict=True)):
            ids, offsets = encoding.ids, encoding.offsets
            for begin, end in _windows(encoding.word_ids, room):
                window = ids[begin:end]
                whole = len(window) == len(ids)
                pairs.append(
                    _Pair(
                        index,
                        head + window + tail,
                        head_types + [self._type_b] * len(window) + tail_types,
                        0 if whole else offsets[begin][0],
                        len(text) if whole else offsets[end - 1][1],
                    )
                )
        return pairs

    def _padded(self, length: int) -> int:
        # Tensor cores want multiples of 8; never past max_length (position limits).
        if not self._device.startswith("cuda"):
            return length
        return min(-(-length // 8) * 8, self.max_length)

    def _score(self, pairs: Sequence[_Pair]) -> list[float]:
        """Logits of all pairs: longest first, batched by padded tokens, order restored."""
        import torch

        # Longest first: the widest batch runs first, so an OOM shows up at once.
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].ids), reverse=True)
        batches: list[list[int]] = []
        for i in order:
            if batches:
                width = self._padded(len(pairs[batches[-1][0]].ids))
                if (len(batches[-1]) + 1) * width <= self.token_budget:
                    batches[-1].append(i)
                    continue
            batches.append([i])
        logits = [0.0] * len(pairs)
        with self._forward_lock, torch.inference_mode():
            for batch in batches:
                scored = self._forward_or_split([pairs[i] for i in batch])
                for i, logit in zip(batch, scored, strict=True):
                    logits[i] = logit
        return logits

    def _forward_or_split(self, pairs: Sequence[_Pair]) -> list[float]:
        import torch

        try:
            return self._forward(pairs)
        except torch.cuda.OutOfMemoryError:
            if len(pairs) == 1:
                raise
        # Split outside the except block: the traceback would keep the failed
        # batch's tensors alive, and empty_cache could not give their memory back.
        torch.cuda.empty_cache()
        half = len(pairs) // 2
        return self._forward_or_split(pairs[:half]) + self._forward_or_split(pairs[half:])

    def _forward(self, pairs: Sequence[_Pair]) -> list[float]:
        """One padded forward pass; the raw logit of each pair."""
        import torch

        width = self._padded(max(len(p.ids) for p in pairs))
        ids = torch.tensor([p.ids + [self._pad_id] * (width - len(p.ids)) for p in pairs])
        inputs = {
            "input_ids": ids,
            "attention_mask": torch.tensor(
                [[1] * len(p.ids) + [0] * (width - len(p.ids)) for p in pairs]
            ),
        }
        if self._uses_type_ids:
            inputs["token_type_ids"] = torch.tensor(
                [p.type_ids + [0] * (width - len(p.ids)) for p in pairs]
            )
        inputs = {k: v.to(self._device, non_blocking=True) for k, v in inputs.items()}
        logits = self._model(**inputs).logits
        return [float(x) for x in logits[:, 0].float().cpu().tolist()]
