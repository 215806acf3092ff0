"""What reranker is in use, or exactly why there is none, and the one command that fixes it.

Every surface that tells a user about reranking shows a ``RerankerStatus`` from
``describe``: the ``sieve serve`` banner, ``/readyz`` (and through it the search
page) and ``sieve compare``. The wording lives here only.

``describe`` loads nothing and imports neither torch nor transformers: it looks
at the settings, at the reranker object the engine holds (unwrapping the cache
and deadline wrappers) and at the model's files. Whether CUDA exists is the
caller's to say (``cuda``): a process that forks workers must not ask torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from search.errors import ConfigError
from search.models import DEFAULT_RERANKER_GPU, default_reranker
from search.rerank.base import card_of, innermost
from search.rerank.blend import card_blend_weight, resolve_blend
from search.rerank.calibration import calibration_of, load_calibration
from search.rerank.cross_encoder import plan_device, plan_runtime

if TYPE_CHECKING:
    from search.config import Settings
    from search.models import LocatedModel

# Why there is no reranker: turned off; the model is not on this machine; it is
# there but failed to load; Celery reranking and no worker answered.
REASONS = ("off", "missing", "load_failed", "no_worker")
_WORKER_COMMAND = "sieve worker --queues rerank"


@dataclass(frozen=True)
class RerankerStatus:
    """The reranker in use (``active``), or the ``reason`` there is none, ``why``, and ``fix``.

    ``device``, ``dtype`` and ``runtime`` ("torch", "onnx" or "onnx-int8") are
    what the model runs with once loaded (planned from the settings until then,
    or "celery workers" and the settings' own values); ``fingerprint`` is the
    short hash of the model's files ("" when they are not on this machine).
    """

    active: bool
    model: str
    backend: str
    fingerprint: str = ""
    device: str = ""
    dtype: str = ""
    runtime: str = ""
    loaded: bool = False
    calibrated: bool = False
    blend_weight: float = 0.0
    blend_source: str = "default"
    reason: str = ""  # one of REASONS when not active
    why: str = ""
    fix: str = ""

    def __post_init__(self) -> None:
        if not self.active and self.reason not in REASONS:
            raise ValueError(f"reason {self.reason!r}; choose one of {', '.join(REASONS)}")

    def line(self) -> str:
        """One line for a terminal: what reranks, or why nothing does and what to run."""
        if not self.active:
            return f"reranker: none: {self.why}. Fix: {self.fix}"
        parts = [
            f"fingerprint {self.fingerprint}" if self.fingerprint else "",
            self.device,
            f"{self.dtype} ({self.runtime})" if self.dtype and self.runtime else self.dtype,
            "calibrated" if self.calibrated else "not calibrated",
            f"blend {self.blend_weight:g} ({self.blend_source})",
        ]
        return f"reranker: {self.model} ({', '.join(p for p in parts if p)})"

    def to_json(self) -> dict[str, Any]:
        """The JSON object ``/readyz`` carries as ``reranker_status``."""
        return asdict(self)


@cache
def cuda_present() -> bool:
    """Whether torch sees a CUDA device (imports torch, once per process).

    Not for a process that forks workers afterwards (the ``sieve serve`` master):
    CUDA set up before a fork is unusable after it; ask in a child process there.
    """
    import torch

    return bool(torch.cuda.is_available())


def fix_for(model: str, cuda: bool | None) -> str:
    """The one command that puts a working reranker on this machine, for ``model``.

    A hub id other than the built-in default is pulled as named; otherwise this
    device's default (``search.models.default_reranker``) is pulled and named.
    ``cuda`` None (not known here) leaves the choice to ``sieve models pull``.
    """
    parts = model.split("/")
    if model != DEFAULT_RERANKER_GPU and len(parts) == 2 and all(parts) and model[0] not in "./~":
        return f"sieve models pull {model}"
    if cuda is None:
        return "sieve models pull (this device's default), then the SIEVE_RERANK_MODEL it prints"
    default = default_reranker(cuda)
    if model == default:
        return f"sieve models pull {default}"
    return f"sieve models pull {default}, then set SIEVE_RERANK_MODEL={default}"


def describe(
    settings: Settings,
    reranker: object | None,
    *,
    cuda: bool | None,
    blend: tuple[float, str] | None = None,
) -> RerankerStatus:
    """The status of ``reranker`` (what the engine holds; None: no reranker).

    ``cuda``: whether this machine has CUDA (None: not known; the device of a
    model not loaded yet then shows as its setting, and the fix names no model).

    ``blend`` is the weight in use and where it came from; by default what
    ``search.rerank.blend.resolve_blend`` picks without a collection's own weight.
    """
    if blend is None:
        # The rule is search.rerank.blend's; a collection's own weight is per query.
        chosen, source = resolve_blend(
            collection=None,
            setting=settings.rerank_blend_weight,
            card=card_blend_weight(card_of(reranker)) if reranker is not None else None,
        )
        blend = (chosen.weight if chosen is not None else 0.0, source)
    blend_weight, blend_source = blend
    common: dict[str, Any] = {
        "backend": settings.rerank_backend,
        "blend_weight": blend_weight,
        "blend_source": blend_source,
    }
    if reranker is None:
        model = settings.rerank_model
        if settings.rerank_backend == "none":
            return RerankerStatus(
                False,
                model,
                reason="off",
                why="SIEVE_RERANK_BACKEND=none turns reranking off",
                fix="set SIEVE_RERANK_BACKEND=auto",
                **common,
            )
        return _missing(model, str(settings.rerank_models_dir), cuda, common)
    inner = innermost(reranker)
    located_of = getattr(inner, "located", None)
    if not callable(located_of):
        return _remote(settings, reranker, inner, cuda, common)
    model = str(getattr(inner, "model", settings.rerank_model))
    located: LocatedModel | None = located_of()
    if located is None:
        return _missing(model, str(getattr(inner, "models_dir", "")), cuda, common)
    error = str(getattr(inner, "load_error", "") or "")
    if error:
        return RerankerStatus(
            False,
            model,
            fingerprint=located.fingerprint,
            reason="load_failed",
            why=f"the reranker model {model!r} failed to load: {error}",
            fix=fix_for(model, cuda),
            **common,
        )
    loaded = getattr(inner, "loaded_as", None)
    runtime = str(getattr(inner, "runtime_setting", ""))
    if loaded is not None:
        device, dtype = loaded
        runtime = str(getattr(inner, "runtime", runtime))
    elif cuda is None:
        device, dtype = str(getattr(inner, "device", "auto")), str(getattr(inner, "dtype", "auto"))
    else:
        try:
            device, dtype = plan_device(
                str(getattr(inner, "device", "auto")), str(getattr(inner, "dtype", "auto")), cuda
            )
        except ConfigError as exc:
            return RerankerStatus(
                False,
                model,
                fingerprint=located.fingerprint,
                reason="load_failed",
                why=f"the reranker model {model!r} cannot load: {exc}",
                fix="set SIEVE_RERANK_DEVICE and SIEVE_RERANK_DTYPE to auto",
                **common,
            )
        if runtime:
            runtime = plan_runtime(runtime)
    return RerankerStatus(
        True,
        model,
        fingerprint=located.fingerprint,
        device=device,
        dtype=dtype,
        runtime=runtime,
        loaded=loaded is not None,
        calibrated=calibration_of(reranker) is not None,
        **common,
    )


def _missing(
    model: str, models_dir: str, cuda: bool | None, common: dict[str, Any]
) -> RerankerStatus:
    return RerankerStatus(
        False,
        model,
        reason="missing",
        why=f"the reranker model {model!r} is not on this machine "
        f"(models folder {models_dir}, SIEVE_RERANK_MODELS_DIR)",
        fix=fix_for(model, cuda),
        **common,
    )


def _remote(
    settings: Settings, reranker: object, inner: object, cuda: bool | None, common: dict[str, Any]
) -> RerankerStatus:
    """A reranker that runs elsewhere (the Celery workers) or one a caller built."""
    from search.errors import ModelNotFound
    from search.models import locate

    model = settings.rerank_model if settings.rerank_backend == "celery" else ""
    model = model or str(getattr(reranker, "model_key", type(inner).__name__))
    error = str(getattr(inner, "last_error", "") or "")
    if error:
        return RerankerStatus(
            False,
            model,
            reason="no_worker",
            why=f"reranking runs on Celery workers and none answered: {error}",
            fix=f"start one: {_WORKER_COMMAND}",
            **common,
        )
    calibrated = calibration_of(reranker) is not None
    try:  # the workers' files, when the models folder is shared with them
        located = locate(model, settings.rerank_models_dir, revision=settings.rerank_revision)
    except ModelNotFound:
        fingerprint = ""
    else:
        fingerprint = located.fingerprint
        calibrated = calibrated or load_calibration(located) is not None
    remote = settings.rerank_backend == "celery"
    return RerankerStatus(
        True,
        model,
        fingerprint=fingerprint,
        device="celery workers" if remote else "",
        dtype=settings.rerank_dtype if remote else "",
        runtime=settings.rerank_runtime if remote else "",
        calibrated=calibrated,
        **common,
    )


def describe_settings(settings: Settings, *, cuda: bool | None) -> RerankerStatus:
    """What the settings will give a server that builds its engine later (the banner).

    Builds no engine and no cache: the in-process reranker the settings name
    (construction is free), or, for Celery, what the settings say the workers run.
    """
    from search.rerank.cross_encoder import CrossEncoderReranker

    backend = settings.rerank_backend
    if backend == "none":
        return describe(settings, None, cuda=cuda)
    if backend == "celery":
        return describe(settings, _SettingsOnly(), cuda=cuda)
    local = CrossEncoderReranker.from_settings(settings)
    return describe(settings, local if backend == "local" or local.available() else None, cuda=cuda)


class _SettingsOnly:
    """Stands for the Celery client where none is built: nothing has failed yet."""

    last_error = ""
