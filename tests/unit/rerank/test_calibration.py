"""Calibration of reranker logits: the fits, ECE, the stored file and its fingerprint key."""

from __future__ import annotations

import json
import logging
import math
import random

import pytest

from search.config import Settings
from search.errors import InvalidRequest
from search.models import locate
from search.rerank import BoundedReranker, CachingReranker, CrossEncoderReranker, sigmoid
from search.rerank.calibration import (
    CALIBRATION_FILE,
    Calibration,
    FittedOn,
    calibration_of,
    expected_calibration_error,
    fit,
    load_calibration,
    log_loss,
    save_calibration,
)
from search.scores import LruScoreStore

pytestmark = pytest.mark.unit


def overconfident(n: int = 2000, seed: int = 0) -> tuple[list[float], list[bool]]:
    """Logits whose sigmoid is far from the truth: P(relevant) = sigmoid(0.5 * logit - 1.5)."""
    rng = random.Random(seed)
    logits = [rng.uniform(-6, 6) for _ in range(n)]
    return logits, [rng.random() < sigmoid(0.5 * x - 1.5) for x in logits]


def separable(n: int = 400, seed: int = 1) -> tuple[list[float], list[bool]]:
    """Relevant pairs all score above the irrelevant ones, but sigmoid says 0.9 for both."""
    rng = random.Random(seed)
    pos = [rng.uniform(2.5, 3.0) for _ in range(n // 4)]
    neg = [rng.uniform(1.8, 2.4) for _ in range(n - n // 4)]
    return pos + neg, [True] * len(pos) + [False] * len(neg)


def ece(cal: Calibration, logits: list[float], labels: list[bool]) -> float:
    return expected_calibration_error([cal.relevance(x) for x in logits], labels)


def test_ece_of_known_bins():
    assert expected_calibration_error([0.05, 0.05, 0.95, 0.95], [0, 0, 1, 1]) == pytest.approx(0.05)
    # One bin: mean p 0.5, rate 1.0; p = 1.0 falls in the last bin.
    assert expected_calibration_error([0.5, 0.5], [1, 1]) == pytest.approx(0.5)
    assert expected_calibration_error([1.0], [1]) == 0.0
    with pytest.raises(InvalidRequest):
        expected_calibration_error([], [])


@pytest.mark.parametrize("method", ["platt", "isotonic"])
@pytest.mark.parametrize("data", [overconfident, separable])
def test_each_method_lowers_ece_and_is_monotone(method, data):
    logits, labels = data()
    cal, losses = fit(logits, labels, method=method, model_fingerprint="fp")
    assert cal.method == method and cal.model_fingerprint == "fp" and losses == {}
    before = expected_calibration_error([sigmoid(x) for x in logits], labels)
    after = ece(cal, logits, labels)
    assert after < before / 3, (before, after)
    grid = [i / 10 for i in range(-100, 101)]
    values = [cal.relevance(x) for x in grid]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))


def test_platt_recovers_the_true_map_and_stays_finite_on_separable_data():
    logits, labels = overconfident(n=5000)
    cal, _ = fit(logits, labels, method="platt", model_fingerprint="fp")
    assert cal.a == pytest.approx(0.5, abs=0.08) and cal.b == pytest.approx(-1.5, abs=0.2)
    logits, labels = separable()
    cal, _ = fit(logits, labels, method="platt", model_fingerprint="fp")
    assert math.isfinite(cal.a) and math.isfinite(cal.b) and cal.a > 0


def test_auto_picks_the_lower_held_out_log_loss():
    logits, labels = overconfident()
    groups = [f"q{i // 20}" for i in range(len(logits))]  # 100 queries of 20 pairs
    cal, losses = fit(logits, labels, method="auto", model_fingerprint="fp", groups=groups)
    assert set(losses) == {"platt", "isotonic"}
    assert cal.method == min(losses, key=lambda name: losses[name])
    # The truth is a logistic curve: Platt should not lose to the step function.
    assert losses["platt"] <= losses["isotonic"] + 0.01
    assert log_loss([cal.relevance(x) for x in logits], labels) < log_loss(
        [sigmoid(x) for x in logits], labels
    )


def test_fit_needs_both_classes_and_a_known_method():
    with pytest.raises(InvalidRequest, match="relevant and irrelevant"):
        fit([1.0, 2.0], [True, True], model_fingerprint="fp")
    with pytest.raises(InvalidRequest, match="choose one of"):
        fit([1.0, 2.0], [True, False], method="beta", model_fingerprint="fp")


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_json_round_trip(method):
    logits, labels = overconfident(n=300)
    cal, _ = fit(logits, labels, method=method, model_fingerprint="abc123")
    cal = Calibration(
        cal.method, cal.model_fingerprint, cal.a, cal.b, cal.x, cal.y,
        FittedOn("sample", "dev", 300, sum(labels), 10, 30, 0.3, 0.02, {"platt": 0.5}),
    )
    raw = json.loads(json.dumps(cal.to_json()))
    assert raw["method"] == method and raw["model_fingerprint"] == "abc123"
    assert raw["fitted_on"]["split"] == "dev"
    again = Calibration.from_json(raw)
    assert again == cal
    assert [again.relevance(x) for x in logits] == [cal.relevance(x) for x in logits]


def model_folder(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "xlm-roberta"}')
    (folder / "model.safetensors").write_bytes(b"weights v1")
    return folder


def test_stored_beside_the_model_and_keyed_to_its_fingerprint(tmp_path, caplog):
    folder = model_folder(tmp_path)
    model = locate(str(folder))
    cal = Calibration("platt", model.fingerprint, a=0.5, b=-1.0)
    path = save_calibration(cal, folder)
    assert path == folder / CALIBRATION_FILE
    # The calibration file itself does not change the model's fingerprint.
    assert locate(str(folder)).fingerprint == model.fingerprint
    assert load_calibration(locate(str(folder))) == cal

    (folder / "model.safetensors").write_bytes(b"weights v2")  # fine-tuned again
    with caplog.at_level(logging.WARNING, logger="search.rerank.calibration"):
        assert load_calibration(locate(str(folder))) is None
    (record,) = caplog.records
    assert "fingerprint" in record.getMessage() and "sieve calibrate" in record.getMessage()


def test_rerankers_expose_the_calibration_through_their_wrappers(tmp_path):
    folder = model_folder(tmp_path)
    inner = CrossEncoderReranker(str(folder), models_dir=tmp_path)
    wrapped = CachingReranker(BoundedReranker(inner, 1.0), LruScoreStore(10), ttl_s=60)
    assert calibration_of(wrapped) is None  # no file: no calibration (and no weights loaded)
    cal = Calibration("platt", locate(str(folder)).fingerprint)
    save_calibration(cal, folder)
    fresh = CrossEncoderReranker(str(folder), models_dir=tmp_path)
    wrapped = CachingReranker(BoundedReranker(fresh, 1.0), LruScoreStore(10), ttl_s=60)
    assert calibration_of(wrapped) == cal
    assert calibration_of(object()) is None


def test_a_model_worse_than_chance_gets_a_flat_map_never_a_reversed_one():
    logits, labels = separable()
    flipped = [-x for x in logits]  # relevant pairs now score lowest
    for method in ("platt", "isotonic"):
        cal, _ = fit(flipped, labels, method=method, model_fingerprint="fp")
        values = [cal.relevance(x) for x in sorted(flipped)]
        assert all(a <= b for a, b in zip(values, values[1:], strict=False)), method
    platt, _ = fit(flipped, labels, method="platt", model_fingerprint="fp")
    assert platt.a == 0.0 and platt.relevance(-5) == pytest.approx(0.25, abs=0.01)


def test_the_celery_client_reads_the_calibration_from_the_models_folder(tmp_path):
    from workers.app import celery_init_app
    from workers.client import CeleryReranker
    from workers.settings import WorkerSettings

    folder = model_folder(tmp_path)
    cal = Calibration("platt", locate(str(folder)).fingerprint, a=2.0)
    save_calibration(cal, folder)
    settings = Settings(rerank_model="model", rerank_models_dir=tmp_path)
    workers = WorkerSettings(broker_url="redis://127.0.0.1:9/0")  # never connected to
    client = CeleryReranker(celery_init_app(settings, workers), settings, workers)
    assert calibration_of(client) == cal
    elsewhere = Settings(rerank_model="model", rerank_models_dir=tmp_path / "none")
    assert calibration_of(CeleryReranker(client.app, elsewhere, workers)) is None
