"""``search.rerank.status``: what reranks, or why nothing does, and the one fix."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from search.config import Settings
from search.engine import reranker_unavailable
from search.errors import ModelIncompatible
from search.models import DEFAULT_RERANKER_CPU, DEFAULT_RERANKER_GPU, LocatedModel
from search.rerank import CachingReranker, CrossEncoderReranker
from search.rerank.calibration import Calibration, save_calibration
from search.rerank.status import RerankerStatus, describe, fix_for
from search.scores import LruScoreStore

pytestmark = pytest.mark.unit


@pytest.fixture
def folder(tmp_path):
    """A model folder as far as the locator and the fingerprint care (nothing is loaded)."""
    path = tmp_path / "models" / "tuned"
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "xlm-roberta"}))
    (path / "model.safetensors").write_bytes(b"weights")
    return path


def settings(tmp_path, **changes) -> Settings:
    return Settings.from_env({}).with_overrides(rerank_models_dir=tmp_path / "models", **changes)


def test_active_reranker_names_model_fingerprint_device_dtype_and_blend(tmp_path, folder):
    inner = CrossEncoderReranker(str(folder), device="auto")
    reranker = CachingReranker(inner, LruScoreStore(10), 60)
    status = describe(settings(tmp_path), reranker, cuda=False)
    fingerprint = LocatedModel("tuned", folder, "path").fingerprint
    assert status.active and not status.loaded and status.reason == ""
    assert (status.model, status.fingerprint) == (str(folder), fingerprint)
    # Planned, not loaded: torch on a CPU at float32 (auto; ONNX Runtime only when asked).
    assert (status.device, status.dtype, status.runtime) == ("cpu", "float32", "torch")
    assert not status.calibrated and (status.blend_weight, status.blend_source) == (0.0, "default")
    on_gpu = describe(settings(tmp_path, rerank_blend_weight=1.5), reranker, cuda=True)
    assert (on_gpu.device, on_gpu.dtype, on_gpu.runtime) == ("cuda", "float16", "torch")
    assert on_gpu.line() == (
        f"reranker: {folder} (fingerprint {fingerprint}, cuda, float16 (torch), not calibrated, "
        "blend 1.5 (setting))"
    )


def test_the_runtime_setting_is_planned_and_shown(tmp_path, folder):
    torch_only = CrossEncoderReranker(str(folder), runtime="torch")
    assert describe(settings(tmp_path), torch_only, cuda=False).runtime == "torch"
    int8 = describe(
        settings(tmp_path), CrossEncoderReranker(str(folder), runtime="onnx-int8"), cuda=True
    )
    assert (int8.device, int8.dtype, int8.runtime) == ("cpu", "float32", "onnx-int8")
    assert ", cpu, float32 (onnx-int8), " in int8.line()
    unknown = describe(settings(tmp_path), CrossEncoderReranker(str(folder)), cuda=None)
    assert unknown.runtime == "auto"  # not known here: the setting, as device and dtype


def test_a_calibration_for_the_models_fingerprint_counts(tmp_path, folder):
    fingerprint = LocatedModel("tuned", folder, "path").fingerprint
    save_calibration(Calibration("platt", fingerprint, a=1.0, b=0.0), folder)
    assert describe(settings(tmp_path), CrossEncoderReranker(str(folder)), cuda=False).calibrated
    save_calibration(Calibration("platt", "another-model", a=1.0, b=0.0), folder)
    again = describe(settings(tmp_path), CrossEncoderReranker(str(folder)), cuda=False)
    assert not again.calibrated


def test_off_says_so_and_how_to_turn_it_on(tmp_path):
    status = describe(settings(tmp_path, rerank_backend="none"), None, cuda=False)
    assert not status.active and status.reason == "off"
    assert status.line() == (
        "reranker: none: SIEVE_RERANK_BACKEND=none turns reranking off. "
        "Fix: set SIEVE_RERANK_BACKEND=auto"
    )


@pytest.mark.parametrize(
    ("cuda", "fix"),
    [
        (
            False,
            f"sieve models pull {DEFAULT_RERANKER_CPU}, then set "
            f"SIEVE_RERANK_MODEL={DEFAULT_RERANKER_CPU}",
        ),
        (True, f"sieve models pull {DEFAULT_RERANKER_GPU}"),
    ],
)
def test_missing_default_model_pulls_the_devices_default(tmp_path, cuda, fix):
    status = describe(settings(tmp_path), None, cuda=cuda)
    assert status.reason == "missing" and status.fix == fix
    assert DEFAULT_RERANKER_GPU in status.why and str(tmp_path / "models") in status.why


def test_missing_local_model_in_local_mode_is_missing(tmp_path):
    reranker = CrossEncoderReranker("acme/absent", models_dir=tmp_path / "models")
    status = describe(settings(tmp_path, rerank_backend="local"), reranker, cuda=False)
    assert status.reason == "missing" and status.fix == "sieve models pull acme/absent"


def test_fix_names_the_model_only_for_a_hub_id():
    assert fix_for("acme/tuned", False) == "sieve models pull acme/tuned"
    assert fix_for("./models/tuned", False).endswith(f"SIEVE_RERANK_MODEL={DEFAULT_RERANKER_CPU}")
    assert fix_for(DEFAULT_RERANKER_GPU, None).startswith("sieve models pull (this device")


@dataclass
class Broken:
    """Any reranker that found its files and failed to load them."""

    folder: object
    model: str = "acme/broken"
    load_error: str = "transformers 4.0 is too old for acme/broken"

    def located(self) -> LocatedModel:
        return LocatedModel(self.model, self.folder, "models_dir")


def test_a_failed_load_carries_its_error(tmp_path, folder):
    status = describe(settings(tmp_path), Broken(folder), cuda=False)
    assert status.reason == "load_failed" and "too old for acme/broken" in status.why
    assert status.fingerprint and status.fix == "sieve models pull acme/broken"


@dataclass
class Remote:
    """The Celery client's shape, as far as the status looks."""

    last_error: str = ""
    model_key: str = "remote@1:512"


def test_celery_without_a_worker_says_start_one(tmp_path):
    celery = settings(tmp_path, rerank_backend="celery")
    status = describe(celery, Remote("no rerank result within 2s"), cuda=None)
    assert status.reason == "no_worker" and "none answered: no rerank result" in status.why
    assert status.fix == "start one: sieve worker --queues rerank"
    healthy = describe(celery, Remote(), cuda=None)
    assert healthy.active and healthy.device == "celery workers"
    assert healthy.model == DEFAULT_RERANKER_GPU


def test_json_has_every_field_and_an_unknown_reason_is_refused(tmp_path):
    status = describe(settings(tmp_path), None, cuda=False)
    assert status.to_json()["reason"] == "missing" and set(status.to_json()) >= {
        "active",
        "model",
        "fingerprint",
        "device",
        "dtype",
        "runtime",
        "calibrated",
        "why",
        "fix",
    }
    with pytest.raises(ValueError, match="choose one of"):
        RerankerStatus(False, "m", "auto", reason="tired")


def test_commands_that_need_a_reranker_use_the_same_words(tmp_path):
    error = str(reranker_unavailable(settings(tmp_path)))
    status = describe(settings(tmp_path), None, cuda=None)
    assert error == f"no reranker is available: {status.why}. Fix: {status.fix}"


def test_a_real_load_and_a_real_failure(tmp_path, tiny_reranker_dir):
    reranker = CrossEncoderReranker(str(tiny_reranker_dir), device="cpu", runtime="torch")
    reranker.warm_up()
    status = describe(settings(tmp_path), reranker, cuda=True)  # loaded: what it runs with
    assert status.loaded and (status.device, status.dtype) == ("cpu", "float32")
    assert status.runtime == "torch"  # ONNX Runtime's load: tests/integration/test_onnx_rerank.py
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    failing = CrossEncoderReranker(str(broken), device="cpu")
    with pytest.raises(ModelIncompatible):
        failing.warm_up()
    status = describe(settings(tmp_path), failing, cuda=False)
    assert status.reason == "load_failed" and "no-such-architecture" in status.why
