"""Calibration: a map from a cross-encoder's logit to P(relevant), fitted on judged pairs.

``sigmoid(logit)`` is a score, not a probability: a reranker trained with a
ranking loss (or fine-tuned on few judgements) puts its logits wherever the loss
left them. A ``Calibration`` maps them to the observed frequency of relevance:

- ``platt``: ``P = sigmoid(a * logit + b)``, a logistic fit with Platt's smoothed
  targets (Platt 1999, "Probabilistic outputs for support vector machines"), so
  that separable data still gives finite parameters; ``a >= 0``, so that, as the
  isotonic map, it never reverses the reranker's order;
- ``isotonic``: the monotone step function that fits the labels best
  (scikit-learn's ``IsotonicRegression``), applied by linear interpolation
  between its thresholds and clipped at both ends, as scikit-learn predicts.

``fit`` picks one, or with ``method="auto"`` the one with the lower log-loss on
held-out queries. A calibration belongs to one model's files: it is stored beside
the weights as ``sieve-calibration.json`` and carries the model's fingerprint
(``search.models.LocatedModel.fingerprint``); ``load_calibration`` ignores one whose
fingerprint is not the model's, with one log line. scikit-learn is imported by
``fit`` only.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from search.errors import ConfigError, InvalidRequest
from search.models import CALIBRATION_FILE, LocatedModel
from search.rerank.base import sigmoid

log = logging.getLogger(__name__)

METHODS = ("platt", "isotonic")
CHOICES = (*METHODS, "auto")
FORMAT = 1
ECE_BINS = 10
HOLDOUT_EVERY = 5  # with method="auto", every 5th query is held out to compare the two
_EPS = 1e-7  # log-loss clips probabilities: an isotonic 0 or 1 would cost infinity


@dataclass(frozen=True)
class FittedOn:
    """What a calibration was fitted on, and how well it fits (ECE on those pairs)."""

    dataset: str
    split: str
    pairs: int
    positives: int
    queries: int = 0
    depth: int = 0  # how many reranked hits per query were judged
    ece_before: float = 0.0  # of sigmoid(logit)
    ece_after: float = 0.0  # of the calibrated relevance
    # Held-out log-loss of each method, when ``method="auto"`` compared them.
    validation_log_loss: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Calibration:
    """A fitted logit -> P(relevant) map for the model with ``model_fingerprint``.

    Platt keeps ``a`` and ``b``; isotonic keeps its thresholds: ascending logits
    ``x`` and the non-decreasing probabilities ``y`` at them.
    """

    method: str
    model_fingerprint: str
    a: float = 1.0
    b: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    fitted_on: FittedOn | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(
                f"calibration method {self.method!r}; choose one of {', '.join(METHODS)}"
            )
        if self.method == "isotonic" and (not self.x or len(self.x) != len(self.y)):
            raise ConfigError("an isotonic calibration needs as many thresholds as values")

    def relevance(self, logit: float) -> float:
        """P(relevant) of one logit, in [0, 1] and non-decreasing in the logit."""
        if self.method == "platt":
            return sigmoid(self.a * logit + self.b)
        return _interp(logit, self.x, self.y)

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in ``sieve-calibration.json``."""
        params: dict[str, Any] = (
            {"a": self.a, "b": self.b}
            if self.method == "platt"
            else {"logits": list(self.x), "probabilities": list(self.y)}
        )
        return {
            "format": FORMAT,
            "method": self.method,
            "model_fingerprint": self.model_fingerprint,
            "parameters": params,
            "fitted_on": None if self.fitted_on is None else asdict(self.fitted_on),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Calibration:
        """The inverse of ``to_json``; ``ConfigError`` for anything else."""
        try:
            if raw["format"] != FORMAT:
                raise ValueError(f"format {raw['format']!r}, this Sieve reads {FORMAT}")
            params = raw["parameters"]
            fitted = raw.get("fitted_on")
            common: dict[str, Any] = {
                "method": str(raw["method"]),
                "model_fingerprint": str(raw["model_fingerprint"]),
                "fitted_on": None if fitted is None else FittedOn(**fitted),
            }
            if common["method"] == "platt":
                return cls(a=float(params["a"]), b=float(params["b"]), **common)
            x = tuple(float(v) for v in params["logits"])
            y = tuple(float(v) for v in params["probabilities"])
            return cls(x=x, y=y, **common)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not a Sieve calibration: {exc}") from exc


def _interp(value: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """``numpy.interp``: linear between thresholds, clipped to the end values."""
    if value <= xs[0]:
        return ys[0]
    if value >= xs[-1]:
        return ys[-1]
    i = bisect.bisect_right(xs, value)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 if x1 == x0 else y0 + (y1 - y0) * (value - x0) / (x1 - x0)


def expected_calibration_error(
    probabilities: Sequence[float], labels: Sequence[bool | int], bins: int = ECE_BINS
) -> float:
    """ECE over ``bins`` equal-width bins of [0, 1]: sum of |mean p - rate of 1s|, weighted.

    A probability of exactly 1.0 falls in the last bin.
    """
    if len(probabilities) != len(labels) or not probabilities:
        raise InvalidRequest("ECE needs as many labels as probabilities, and at least one")
    sums = [[0.0, 0.0, 0] for _ in range(bins)]  # sum p, sum y, count
    for p, y in zip(probabilities, labels, strict=True):
        row = sums[min(int(p * bins), bins - 1)]
        row[0] += p
        row[1] += float(bool(y))
        row[2] += 1
    n = len(probabilities)
    return sum(abs(sp - sy) / n for sp, sy, count in sums if count)


def log_loss(probabilities: Sequence[float], labels: Sequence[bool | int]) -> float:
    """Mean negative log-likelihood, probabilities clipped to [1e-7, 1 - 1e-7]."""
    total = 0.0
    for p, y in zip(probabilities, labels, strict=True):
        p = min(max(p, _EPS), 1 - _EPS)
        total -= math.log(p) if y else math.log(1 - p)
    return total / len(probabilities)


def fit(
    logits: Sequence[float],
    labels: Sequence[bool | int],
    *,
    method: str = "auto",
    model_fingerprint: str,
    groups: Sequence[str] | None = None,
) -> tuple[Calibration, dict[str, float]]:
    """Fit a calibration on (logit, relevant?) pairs; also the held-out log-losses compared.

    ``groups`` (a query id per pair) keeps each query's pairs on one side of the
    held-out split that ``method="auto"`` uses (every ``HOLDOUT_EVERY``-th query);
    without groups, or with too few queries, every 5th pair is held out. The
    chosen method is then refitted on all pairs. Both classes must be present.
    """
    if method not in CHOICES:
        raise InvalidRequest(f"calibration method {method!r}; choose one of {', '.join(CHOICES)}")
    if len(logits) != len(labels):
        raise InvalidRequest("as many labels as logits are needed")
    positives = sum(bool(y) for y in labels)
    if positives in (0, len(labels)):
        raise InvalidRequest(
            f"{len(labels)} pairs, {positives} relevant: calibration needs relevant "
            "and irrelevant pairs both"
        )
    losses: dict[str, float] = {}
    if method == "auto":
        fit_idx, held_idx = _holdout(labels, groups)
        if held_idx:
            for name in METHODS:
                model = _fit_one(name, [logits[i] for i in fit_idx], [labels[i] for i in fit_idx])
                held = [model.relevance(logits[i]) for i in held_idx]
                losses[name] = log_loss(held, [labels[i] for i in held_idx])
            method = min(METHODS, key=lambda name: (losses[name], name))
        else:
            method = "platt"  # two parameters: the safer choice when nothing can be held out
    return _fit_one(method, logits, labels, model_fingerprint), losses


def fit_judged(
    logits: Sequence[float],
    labels: Sequence[bool | int],
    groups: Sequence[str],
    *,
    method: str,
    model_fingerprint: str,
    dataset: str,
    split: str,
    depth: int,
) -> Calibration:
    """``fit`` on one data set's judged pairs, with what it was fitted on and its ECE.

    ``groups`` holds the query id of each pair; ``sieve calibrate`` and
    ``sieve finetune`` (on its held-out queries) both record their fit this way.
    """
    calibration, losses = fit(
        logits, labels, method=method, model_fingerprint=model_fingerprint, groups=groups
    )
    fitted_on = FittedOn(
        dataset=dataset,
        split=split,
        pairs=len(labels),
        positives=sum(bool(y) for y in labels),
        queries=len(set(groups)),
        depth=depth,
        ece_before=round(expected_calibration_error([sigmoid(x) for x in logits], labels), 6),
        ece_after=round(
            expected_calibration_error([calibration.relevance(x) for x in logits], labels), 6
        ),
        validation_log_loss={k: round(v, 6) for k, v in losses.items()},
    )
    return replace(calibration, fitted_on=fitted_on)


def _holdout(
    labels: Sequence[bool | int], groups: Sequence[str] | None
) -> tuple[list[int], list[int]]:
    """Indices to fit on and to hold out; no held-out part unless both sides hold both classes."""
    n = len(labels)
    names = sorted(set(groups)) if groups is not None else []
    if len(names) >= HOLDOUT_EVERY and groups is not None:
        held_groups = set(names[HOLDOUT_EVERY - 1 :: HOLDOUT_EVERY])
        held = [i for i in range(n) if groups[i] in held_groups]
    else:
        held = list(range(HOLDOUT_EVERY - 1, n, HOLDOUT_EVERY))
    taken = set(held)
    rest = [i for i in range(n) if i not in taken]
    for part in (held, rest):
        if len({bool(labels[i]) for i in part}) < 2:
            return list(range(n)), []
    return rest, held


def _fit_one(
    method: str, logits: Sequence[float], labels: Sequence[bool | int], fingerprint: str = ""
) -> Calibration:
    import numpy as np

    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray([bool(v) for v in labels], dtype=np.float64)
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        # Platt's targets: (N+ + 1) / (N+ + 2) and 1 / (N- + 2), given as the weights
        # of each pair counted once as relevant and once as not.
        pos, neg = float(y.sum()), float(len(y) - y.sum())
        target = np.where(y > 0, (pos + 1) / (pos + 2), 1 / (neg + 2))
        features = np.concatenate([x, x]).reshape(-1, 1)
        classes = np.concatenate([np.ones_like(x), np.zeros_like(x)])
        weights = np.concatenate([target, 1 - target])
        # C large: no penalty on the slope (the smoothed targets keep it finite).
        model = LogisticRegression(C=1e6, max_iter=1000)
        model.fit(features, classes, sample_weight=weights)
        a, b = float(model.coef_[0][0]), float(model.intercept_[0])
        if a < 0:
            # Higher logits are *less* often relevant here (a model worse than chance
            # on this data): a calibration never reverses the reranker's order, so
            # the map goes flat at the smoothed base rate instead.
            rate = float(target.mean())
            a, b = 0.0, math.log(rate / (1 - rate))
        return Calibration("platt", fingerprint, a=a, b=b)
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(x, y)
    xs = tuple(float(v) for v in iso.X_thresholds_)
    ys = tuple(float(v) for v in iso.y_thresholds_)
    return Calibration("isotonic", fingerprint, x=xs, y=ys)


def calibration_path(folder: Path) -> Path:
    """Where a model folder keeps its calibration."""
    return Path(folder) / CALIBRATION_FILE


def save_calibration(calibration: Calibration, folder: Path) -> Path:
    """Write ``calibration`` beside the model in ``folder`` (atomically); returns the path."""
    path = calibration_path(folder)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(calibration.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_calibration(model: LocatedModel) -> Calibration | None:
    """The calibration stored beside ``model``, if there is one and it is the model's.

    One whose fingerprint is another model's (the weights changed after it was
    fitted), or that cannot be read, is ignored with one log line.
    """
    path = calibration_path(model.folder)
    if not path.is_file():
        return None
    try:
        calibration = Calibration.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ConfigError) as exc:
        log.warning("ignoring calibration %s: %s", path, exc)
        return None
    if calibration.model_fingerprint != model.fingerprint:
        log.warning(
            "ignoring calibration %s: fitted for model fingerprint %s, the model's is %s "
            "(run `sieve calibrate` again)",
            path,
            calibration.model_fingerprint,
            model.fingerprint,
        )
        return None
    return calibration


def calibration_of(reranker: object) -> Calibration | None:
    """A reranker's calibration, if it exposes one (wrappers pass their inner one on)."""
    found = getattr(reranker, "calibration", None)
    return found if isinstance(found, Calibration) else None
