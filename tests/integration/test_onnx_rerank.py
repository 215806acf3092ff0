"""The cross-encoder on ONNX Runtime: torch's logits, exported once, int8 cached beside.

Uses the tests' tiny XLM-R reranker and a cache folder of the test's own, so every
export here is real and nothing is shared with other tests or the user's cache.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from search.config import Settings
from search.errors import BackendUnavailable, ConfigError, ModelIncompatible
from search.rerank import CrossEncoderReranker
from search.rerank.status import describe

pytestmark = pytest.mark.integration

QUERY = "how do I cook rice on the stove"
SAMPLE = Path(__file__).resolve().parents[2] / "sample" / "corpus.jsonl"


def passages() -> list[str]:
    """Short to long, CJK and empty; the last far past a 64-token window (scored by windows)."""
    docs = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    long = " ".join(d["text"] for d in docs if d["_id"].startswith("en-"))[:3000]
    return [
        "Rinse the rice, add water, bring it to a boil, then simmer covered.",
        "Keep the bike chain clean.",
        "茶叶应密封保存，放在阴凉干燥的地方。",
        "",
        "Let the skillet cool, rinse it under hot water and dry it over low heat. " * 3,
        long,
    ]


def reranker(folder: Path, cache: Path, runtime: str = "auto") -> CrossEncoderReranker:
    return CrossEncoderReranker(
        str(folder), max_length=64, token_budget=256, runtime=runtime, onnx_cache=str(cache)
    )


def logits(r: CrossEncoderReranker, texts: list[str]) -> np.ndarray:
    return np.array([s.logit for s in r.rerank(QUERY, texts).scores])


def exported(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if not p.name.startswith("."))


def test_onnx_gives_torchs_logits_and_exports_once(tiny_reranker_dir, tmp_path):
    cache = tmp_path / "onnx"
    texts = passages()
    torch_run = reranker(tiny_reranker_dir, cache, "torch")
    expected = logits(torch_run, texts)
    first = reranker(tiny_reranker_dir, cache, "onnx")
    got = first.rerank(QUERY, texts)
    assert first.runtime == "onnx" and first._model is None  # no torch model is loaded
    assert got.scores[-1].end < len(texts[-1])  # the long passage was scored by a window
    np.testing.assert_allclose([s.logit for s in got.scores], expected, atol=1e-4)
    assert [(s.start, s.end) for s in got.scores] == [
        (s.start, s.end) for s in torch_run.rerank(QUERY, texts).scores
    ]
    (graph,) = exported(cache)
    assert graph.name.endswith("-logit")  # never an embedder's folder for the same files
    stamp = (graph / "model.onnx").stat().st_mtime_ns
    again = reranker(tiny_reranker_dir, cache, "onnx")
    np.testing.assert_allclose(logits(again, texts), expected, atol=1e-4)
    assert (graph / "model.onnx").stat().st_mtime_ns == stamp  # reused, not exported again
    # Same scores, same pair-score cache key as torch.
    assert first.model_key == torch_run.model_key
    status = describe(Settings.from_env({}), first, cuda=False)
    assert status.loaded and (status.dtype, status.runtime) == ("float32", "onnx")
    assert "cpu, float32 (onnx)" in status.line()


def test_int8_is_close_keyed_apart_and_cached_beside(tiny_reranker_dir, tmp_path):
    cache = tmp_path / "onnx"
    texts = passages()
    exact = reranker(tiny_reranker_dir, cache, "onnx")
    quantized = reranker(tiny_reranker_dir, cache, "onnx-int8")
    want, got = logits(exact, texts), logits(quantized, texts)
    assert quantized.runtime == "onnx-int8"
    assert not np.array_equal(got, want)  # it is another model ...
    # ... whose logits stay close: 0.1 bounds the worst difference measured on this
    # tiny model (0.029, the logits spread over 1.09), and the order is the same.
    assert np.abs(got - want).max() < 0.1
    assert list(np.argsort(got)) == list(np.argsort(want))
    assert quantized.model_key == exact.model_key + ":onnx-int8"  # never mixed in the cache
    names = [p.name for p in exported(cache)]
    assert len(names) == 2 and names[1] == names[0] + "-int8"


def test_an_export_failure_is_a_load_error_and_auto_never_exports(
    tiny_reranker_dir, tmp_path, monkeypatch, caplog
):
    # A mock, of the exporter only: no small model that torch.export refuses could be
    # built here without depending on which operators this torch version lacks.
    import search.onnx_runtime as onnx_runtime

    def refuse(*_: object) -> None:
        raise ModelIncompatible("tiny cannot be exported to ONNX (UserError: unsupported op)")

    monkeypatch.setattr(onnx_runtime, "_export", refuse)
    folder = Path(shutil.copytree(tiny_reranker_dir, tmp_path / "model"))
    forced = reranker(folder, tmp_path / "onnx", "onnx")
    with pytest.raises(BackendUnavailable):
        forced.rerank(QUERY, passages())
    assert forced.load_error.startswith("SIEVE_RERANK_RUNTIME=onnx: tiny cannot be exported")
    # auto is torch on a CPU (it measured faster than ONNX Runtime for reranking):
    # nothing is exported, so the refusing exporter is never reached.
    plain = reranker(folder, tmp_path / "onnx")
    with caplog.at_level(logging.WARNING, logger="search.rerank.cross_encoder"):
        got = logits(plain, passages())
    assert plain.runtime == "torch"
    expected = logits(reranker(folder, tmp_path / "onnx", "torch"), passages())
    np.testing.assert_array_equal(got, expected)
    assert [r for r in caplog.records if r.levelno == logging.WARNING] == []
    assert not (tmp_path / "onnx").exists() or exported(tmp_path / "onnx") == []


def test_the_runtime_setting_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="SIEVE_RERANK_RUNTIME='tensorrt' is not valid"):
        Settings.from_env({"SIEVE_RERANK_RUNTIME": "tensorrt"})
    settings = Settings.from_env(
        {"SIEVE_RERANK_RUNTIME": "onnx-int8", "SIEVE_ONNX_CACHE": str(tmp_path)}
    )
    built = CrossEncoderReranker.from_settings(settings)
    assert (built.runtime_setting, built.onnx_cache) == ("onnx-int8", str(tmp_path))
    # The Celery client's key before any worker answers carries the same suffix.
    from workers.app import celery_init_app
    from workers.client import CeleryReranker
    from workers.settings import WorkerSettings

    workers = WorkerSettings(broker_url="redis://127.0.0.1:1/0")  # nothing connects here
    remote = CeleryReranker(celery_init_app(settings, workers), settings, workers)
    assert remote.model_key.endswith("@default:512:onnx-int8")
    with pytest.raises(ConfigError, match="SIEVE_RERANK_RUNTIME=onnx runs on the CPU"):
        CrossEncoderReranker.from_settings(
            Settings.from_env({"SIEVE_RERANK_RUNTIME": "onnx", "SIEVE_RERANK_DEVICE": "cuda"})
        )
