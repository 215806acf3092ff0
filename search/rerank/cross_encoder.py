"""``CrossEncoderReranker``: the in-process reranker, and how it runs its model.

Loading (the model found by ``search.models.locate``, version checks, device,
dtype and runtime), batching by a padded-token budget, splitting a batch that
runs out of CUDA memory, and the forward pass live here; how a (query, passage)
pair becomes model input is ``search.rerank.pairs``. ``runtime`` ``onnx`` or
``onnx-int8`` runs the model on ONNX Runtime on a CPU (``search.onnx_runtime``,
the graph exported once per fingerprint); ``auto`` is torch, whose SDPA
attention beat ONNX Runtime on reranking pairs (``bench/rerank_runtime.py``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.batching import budget_batches
from search.errors import (
    BackendUnavailable,
    ConfigError,
    InvalidRequest,
    ModelIncompatible,
    ModelNotFound,
)
from search.model_folders import read_card
from search.models import LocatedModel, locate
from search.onnx_runtime import RUNTIMES, Head, OnnxModel, cache_root
from search.rerank.base import left_s, sigmoid, stop_at
from search.rerank.calibration import Calibration, load_calibration
from search.rerank.pairs import Pair, PairEncoder, best_windows, serving_max_length
from search.types import RerankBatch, RerankScore

if TYPE_CHECKING:
    from search.config import Settings

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float16", "bfloat16", "float32")
_FP16_ON_CPU = (
    "float16 is only used on CUDA (CPU kernels for it are slow or missing); "
    "on CPU set SIEVE_RERANK_DTYPE to float32 or bfloat16"
)
_NOT_FOUND_HINT = (
    "Put it in SIEVE_RERANK_MODELS_DIR, set SIEVE_RERANK_MODEL to its folder, "
    "or allow downloads with SIEVE_ALLOW_DOWNLOAD=1."
)


def plan_device(device: str, dtype: str, cuda: bool) -> tuple[str, str]:
    """The device and dtype name a model is loaded with: ``auto`` resolved by ``cuda``.

    ``auto`` is CUDA when there is one, else the CPU; dtype ``auto`` is float16 on
    CUDA and float32 on CPU. ``ConfigError`` for CUDA asked for without one, or
    float16 on CPU.
    """
    if device == "auto":
        device = "cuda" if cuda else "cpu"
    on_cuda = device.startswith("cuda")
    if on_cuda and not cuda:
        raise ConfigError(f"reranker device {device!r} asked for, but CUDA is not available")
    name = dtype if dtype != "auto" else ("float16" if on_cuda else "float32")
    if name == "float16" and not on_cuda:
        raise ConfigError(_FP16_ON_CPU, value=dtype)
    return device, name


def plan_runtime(runtime: str) -> str:
    """What runs the model for the ``SIEVE_RERANK_RUNTIME`` setting ``runtime``.

    ``auto`` is torch everywhere: on a CPU, torch's fused SDPA attention reranked
    a top-50 25% faster than fp32 ONNX Runtime, and int8 was within noise of
    torch while changing the scores (docs/benchmarks.md, "Reranker runtimes").
    An explicit runtime is kept. (The embedder's ``auto`` differs: there ONNX
    Runtime won, ``search.embed``.)
    """
    return "torch" if runtime == "auto" else runtime


def key_suffix(runtime: str) -> str:
    """What a runtime setting adds to a model key: scores that differ are cached apart.

    torch and fp32 ONNX give the same logits (about 1e-6 apart) and share a key;
    ``onnx-int8`` is another model as far as scores go.
    """
    return ":onnx-int8" if runtime == "onnx-int8" else ""


def _major(version: str) -> int:
    """Leading integer of a version string ("4.38.1" -> 4, "5.0.0rc1" -> 5); 0 if none."""
    digits = ""
    for char in version.strip():
        if not char.isdigit():
            break
        digits += char
    return int(digits or 0)


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
        max_length: int | None = None,
        query_share: float = 0.25,
        token_budget: int = 16384,
        allow_download: bool = False,
        runtime: str = "auto",
        onnx_cache: str = "",
    ) -> None:
        if runtime not in RUNTIMES:
            raise ConfigError(
                f"SIEVE_RERANK_RUNTIME must be one of {', '.join(RUNTIMES)}", value=runtime
            )
        if runtime.startswith("onnx"):
            # ONNX Runtime runs here on the CPU only, at float32 (int8 weights for onnx-int8).
            if device.startswith("cuda") or dtype not in ("auto", "float32"):
                raise ConfigError(
                    f"SIEVE_RERANK_RUNTIME={runtime} runs on the CPU at float32; set "
                    "SIEVE_RERANK_DEVICE to cpu or auto and SIEVE_RERANK_DTYPE to float32 or auto",
                    value=runtime,
                )
            device = "cpu"
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
        if (max_length is not None and max_length < 16) or token_budget < 1:
            raise ConfigError("reranker max_length must be >= 16 and token_budget >= 1")
        self.model = model
        self.models_dir = Path(models_dir)
        self.revision = revision
        self.device = device
        self.dtype = dtype
        self._max_length_setting = max_length
        self._max_length: int | None = max_length
        self.query_share = query_share
        self.token_budget = token_budget
        self.allow_download = allow_download
        self.runtime_setting = runtime
        self.onnx_cache = onnx_cache
        self._load_lock = threading.Lock()
        # One forward pass at a time per model: concurrent passes on one device
        # only compete for the same cores or the same GPU memory.
        self._forward_lock = threading.Lock()
        self._model: Any = None  # the torch model, on the torch runtime
        self._onnx: OnnxModel | None = None  # the session, on onnx and onnx-int8
        self._runtime = ""  # what runs the loaded model; "" until loaded
        self._tokenizer: Any = None
        self._device = "cpu"
        self._located: LocatedModel | None = None
        self._key: str | None = None
        self._calibration: Calibration | None = None
        self._calibration_read = False
        self._dtype_name = ""
        self._card: dict[str, Any] | None = None
        self._load_error = ""  # the last failed load's message, until a load succeeds
        # Filled at load from the tokenizer.
        self._pairs: PairEncoder | None = None
        self._pad_id = 0
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
            runtime=settings.rerank_runtime,
            onnx_cache=settings.onnx_cache,
        )

    @property
    def max_length(self) -> int:
        """Tokens per pair: the setting, else the model card's, else 512 (``serving_max_length``).

        Reads the card, never the weights; a model not found yet gets the default
        without keeping it, so that the card is read once the model is there.
        """
        if self._max_length is None:
            try:
                folder: Path | None = self._locate().folder
            except ModelNotFound:
                return serving_max_length(self._max_length_setting, None)
            self._max_length = serving_max_length(self._max_length_setting, folder)
        return self._max_length

    @property
    def model_key(self) -> str:
        """``model@revision:max_length``; the revision is derived from the files when not set.

        ``onnx-int8`` appends ``:onnx-int8``: its scores differ from the float
        model's, and the pair-score cache must never mix the two. torch and fp32
        ONNX share the key (their logits agree to about 1e-6).

        Reads config.json (and samples the weight files) but loads nothing. A
        model that cannot be found gives ``model@unresolved:max_length`` rather
        than raising: ``isinstance(x, Reranker)`` reads this property on Python
        3.11, and no score can be stored under that key since ``rerank`` fails.
        """
        if self._key is None:
            suffix = key_suffix(self.runtime_setting)
            try:
                located = self._locate()
            except ModelNotFound:
                return f"{self.model}@unresolved:{self.max_length}{suffix}"
            revision = self.revision or located.revision
            self._key = f"{self.model}@{revision}:{self.max_length}{suffix}"
        return self._key

    @property
    def calibration(self) -> Calibration | None:
        """The model's logit -> P(relevant) map (``sieve-calibration.json`` beside it), or None.

        Read once, at load or on first use (a calibration written later needs a
        new reranker, i.e. a restart); one fitted for other weights is ignored.
        Loads no weights; a model that cannot be found has none.
        """
        if not self._calibration_read:
            try:
                located = self._locate()
            except ModelNotFound:
                return None
            self._calibration = load_calibration(located)
            self._calibration_read = True
        return self._calibration

    def warm_up(self) -> None:
        """Find and load the model now; raises ``ModelNotFound`` or ``ModelIncompatible``."""
        try:
            self._load()
        except (ModelNotFound, ModelIncompatible, ConfigError) as exc:
            self._load_error = str(exc)
            raise

    def rerank(
        self,
        query: str,
        passages: Sequence[str],
        *,
        deadline: float | None = None,
        max_doc_tokens: int | None = None,
    ) -> RerankBatch:
        """One raw logit (and its sigmoid) per passage, in the passages' order.

        With a ``deadline`` the call waits for the model at most until then and
        stops between steps of tokenising and between batches once it has
        passed (``BackendUnavailable``). ``max_doc_tokens``: see ``PairEncoder.encode``.
        """
        if isinstance(passages, str) or not all(isinstance(p, str) for p in passages):
            raise InvalidRequest("passages must be a sequence of strings")
        if not passages:
            return RerankBatch([])
        try:
            self._load()
        except (ModelNotFound, ModelIncompatible, ConfigError) as exc:
            self._load_error = str(exc)
            if isinstance(exc, ConfigError):
                raise
            # The Reranker contract: a reranker that cannot answer is "unavailable",
            # and the pipeline degrades; the typed cause stays attached.
            raise BackendUnavailable(str(exc), backend="rerank", model=self.model) from exc
        started = time.perf_counter()
        pairs = self._encode(query, passages, deadline, max_doc_tokens)
        scores = [
            RerankScore(logit=logit, score=sigmoid(logit), start=pair.start, end=pair.end)
            for logit, pair in best_windows(pairs, self._score(pairs, deadline), len(passages))
        ]
        # "model": tokenising plus the forward passes, i.e. all the work done here.
        return RerankBatch(
            scores,
            timings_ms={"model": (time.perf_counter() - started) * 1e3},
            tokens=sum(len(pair.ids) for pair in pairs),
        )

    @property
    def card(self) -> dict[str, Any]:
        """The model's ``sieve-model.json`` (read once; {} when it has none or is not here)."""
        if self._card is None:
            located = self.located()
            self._card = read_card(located.folder) if located is not None else {}
        return self._card

    @property
    def load_error(self) -> str:
        """Why the last attempt to load the model failed ("" before any, or once one worked)."""
        return self._load_error

    @property
    def loaded_as(self) -> tuple[str, str] | None:
        """The device and dtype name of the loaded model; None until it is loaded."""
        return (self._device, self._dtype_name) if self._runtime else None

    @property
    def runtime(self) -> str:
        """What runs the loaded model: "torch", "onnx" or "onnx-int8"; "" until loaded."""
        return self._runtime

    def located(self) -> LocatedModel | None:
        """The model's files on this machine (offline, nothing loaded), or None."""
        try:
            return self._locate(download=False)
        except ModelNotFound:
            return None

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

    def _locate(self, *, download: bool | None = None) -> LocatedModel:
        """Find the model's folder offline, or its config on the hub if downloads are allowed."""
        if self._located is None:
            self._located = locate(
                self.model,
                self.models_dir,
                allow_download=self.allow_download if download is None else download,
                revision=self.revision,
                kind="reranker model",
                hint=_NOT_FOUND_HINT,
            )
        return self._located

    def _load(self) -> None:
        if self._runtime:
            return
        with self._load_lock:
            if self._runtime:
                return
            import torch
            import transformers
            from transformers.utils import logging as hf_logging

            # A library call must not draw progress bars on the caller's terminal.
            hf_logging.disable_progress_bar()
            located = self._locate()
            device, dtype = self._device_and_dtype(torch)
            installed = f"transformers {transformers.__version__}, torch {torch.__version__}"
            raw = located.config()
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
            source, where = located.load_args(self.allow_download)
            try:
                config = transformers.AutoConfig.from_pretrained(source, **where)
            except (KeyError, ValueError) as exc:  # how transformers says "unknown model_type"
                raise incompatible(f"{installed} cannot read {needs}: {exc}") from exc
            if config.num_labels != 1:
                raise incompatible(f"{needs} has {config.num_labels} labels; a reranker needs 1")
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(source, **where)
            except OSError as exc:
                raise ModelNotFound(
                    f"could not load reranker {self.model} from {source}: {exc}", model=self.model
                ) from exc
            if not tokenizer.is_fast:
                raise incompatible(f"{needs}: no fast tokenizer (needed for offsets)")
            limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
            if 0 < limit < self.max_length:
                raise ConfigError(
                    f"reranker max_length {self.max_length} exceeds {self.model}'s {limit} tokens",
                    value=self.max_length,
                )
            runtime = plan_runtime(self.runtime_setting)
            onnx = self._load_onnx(located) if runtime != "torch" else None
            model = None
            if onnx is None:
                # transformers 4.56 renamed torch_dtype to dtype (the old name warns in 5.x).
                new_api = tuple(map(_major, transformers.__version__.split(".")[:2])) >= (4, 56)
                dtype_kw = "dtype" if new_api else "torch_dtype"
                try:
                    model = transformers.AutoModelForSequenceClassification.from_pretrained(
                        source,
                        config=config,
                        attn_implementation="sdpa",
                        **{dtype_kw: dtype},
                        **where,
                    )
                except OSError as exc:
                    raise ModelNotFound(
                        f"could not load reranker {self.model} from {source}: {exc}",
                        model=self.model,
                    ) from exc
                except ValueError as exc:  # e.g. an architecture without SDPA support
                    raise incompatible(f"{installed} cannot load {needs}: {exc}") from exc
            # PairEncoder builds the pairs; settings left on the shared backend by
            # tokenizer.json or an earlier __call__ must not truncate or pad for it.
            backend = tokenizer.backend_tokenizer
            backend.no_truncation()
            backend.no_padding()
            self._pairs = PairEncoder(backend, self.max_length, self.query_share)
            self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            self._uses_type_ids = "token_type_ids" in tokenizer.model_input_names
            self._tokenizer = tokenizer
            self._device = device
            if onnx is not None:
                self._onnx = onnx
                self._runtime = runtime
            else:
                assert model is not None
                self._model = model.to(device).eval()
                self._runtime = "torch"
            self._load_error = ""
        _ = self.calibration  # read with the model, not on the first query

    def _load_onnx(self, located: LocatedModel) -> OnnxModel:
        """The ONNX Runtime session (``runtime`` onnx or onnx-int8, asked for explicitly)."""
        try:
            return OnnxModel.load(
                located,
                head=Head.logit(),
                quantized=self.runtime_setting == "onnx-int8",
                cache=cache_root(self.onnx_cache),
            )
        except (ModelIncompatible, ImportError, OSError) as exc:
            raise ModelIncompatible(
                f"SIEVE_RERANK_RUNTIME={self.runtime_setting}: {exc}", model=self.model
            ) from exc

    def _device_and_dtype(self, torch: Any) -> tuple[str, Any]:
        device, name = plan_device(self.device, self.dtype, bool(torch.cuda.is_available()))
        self._dtype_name = name
        return device, getattr(torch, name)

    def _encode(
        self,
        query: str,
        passages: Sequence[str],
        deadline: float | None = None,
        max_doc_tokens: int | None = None,
    ) -> list[Pair]:
        """The model inputs for ``passages`` (loaded model only): see ``PairEncoder.encode``."""
        assert self._pairs is not None, "the model is loaded before pairs are built"
        return self._pairs.encode(query, passages, deadline, max_doc_tokens)

    def _padded(self, length: int) -> int:
        # Tensor cores want multiples of 8; never past max_length (position limits).
        if not self._device.startswith("cuda"):
            return length
        return min(-(-length // 8) * 8, self.max_length)

    def _score(self, pairs: Sequence[Pair], deadline: float | None = None) -> list[float]:
        """Logits of all pairs: longest first, batched by padded tokens, order restored.

        The model is taken for the whole call (one forward pass at a time per
        model) but never past ``deadline``: waiting for it, and between batches.
        """
        import torch

        lengths = [len(pair.ids) for pair in pairs]
        batches = budget_batches(lengths, self.token_budget, width=self._padded)
        logits = [0.0] * len(pairs)
        wait = left_s(deadline)
        if not self._forward_lock.acquire(timeout=-1 if wait is None else wait):
            raise BackendUnavailable(
                "the reranker model was busy with other requests until the deadline",
                backend="rerank",
                reason="busy",
            )
        try:
            with torch.inference_mode(), self._attention_backends(torch):
                for done, batch in enumerate(batches):
                    stop_at(deadline, f"{done} of {len(batches)} batches")
                    scored = self._forward_or_split([pairs[i] for i in batch])
                    for i, logit in zip(batch, scored, strict=True):
                        logits[i] = logit
        finally:
            self._forward_lock.release()
        return logits

    def _attention_backends(self, torch: Any) -> contextlib.AbstractContextManager[Any]:
        """On CUDA: SDPA's flash, memory-efficient and math kernels, never cuDNN's.

        cuDNN's attention builds an execution plan for each new (batch, width)
        shape, and a reranker meets a new shape on almost every call: on an H200
        that cost a top-50 of SciFact abstracts 130 ms at p50 instead of 77, and
        doubled p99 (``bench/rerank.py --systems sieve,sieve-no-cudnn``).
        """
        if not self._device.startswith("cuda"):
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(
            [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
        )

    def _forward_or_split(self, pairs: Sequence[Pair]) -> list[float]:
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

    def _forward(self, pairs: Sequence[Pair]) -> list[float]:
        """One padded forward pass; the raw logit of each pair."""
        import torch

        width = self._padded(max(len(p.ids) for p in pairs))
        rows = {
            "input_ids": [p.ids + [self._pad_id] * (width - len(p.ids)) for p in pairs],
            "attention_mask": [[1] * len(p.ids) + [0] * (width - len(p.ids)) for p in pairs],
        }
        if self._uses_type_ids:
            rows["token_type_ids"] = [p.type_ids + [0] * (width - len(p.ids)) for p in pairs]
        if self._onnx is not None:
            return [float(x) for x in self._onnx.run(rows).tolist()]
        inputs = {k: torch.tensor(v).to(self._device, non_blocking=True) for k, v in rows.items()}
        logits = self._model(**inputs).logits
        return [float(x) for x in logits[:, 0].float().cpu().tolist()]
