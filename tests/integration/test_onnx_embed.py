"""The embedder on ONNX Runtime: the same vectors as torch, exported once, keyed by fingerprint.

Uses the tests' tiny multilingual encoder (an XLM-R built locally) and a cache
folder of the test's own, so every export here is real and nothing is shared.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from search.config import Settings
from search.embed import TransformerEmbedder
from search.errors import ConfigError, ModelIncompatible

pytestmark = pytest.mark.integration

TEXTS = ["how to stop a nosebleed", "台风来临前应该准备什么", "a " * 300, "x"]


def embedder(folder: Path, cache: Path, runtime: str = "auto") -> TransformerEmbedder:
    return TransformerEmbedder(str(folder), runtime=runtime, onnx_cache=str(cache), batch_size=3)


def test_onnx_gives_torchs_vectors_and_exports_once(tiny_encoder_dir, tmp_path):
    cache = tmp_path / "onnx"
    torch_vectors = embedder(tiny_encoder_dir, cache, "torch").embed(TEXTS)
    first = embedder(tiny_encoder_dir, cache)
    vectors = first.embed(TEXTS)
    assert first.runtime == "onnx"  # auto on a CPU
    np.testing.assert_allclose(vectors, torch_vectors, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    (exported,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    stamp = (exported / "model.onnx").stat().st_mtime_ns
    again = embedder(tiny_encoder_dir, cache)
    np.testing.assert_allclose(again.embed(TEXTS), vectors, atol=1e-6)
    assert (exported / "model.onnx").stat().st_mtime_ns == stamp  # reused, not exported again
    assert first.embed([]).shape == (0, first.dim)


def test_changed_weights_are_exported_again(tiny_encoder_dir, tmp_path):
    from support.tiny_models import build_tiny_encoder

    cache = tmp_path / "onnx"
    other = build_tiny_encoder(tmp_path / "retrained", seed=1)
    a = embedder(tiny_encoder_dir, cache).embed(TEXTS[:1])
    b = embedder(other, cache).embed(TEXTS[:1])
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2
    assert not np.allclose(a, b)


def test_int8_is_close_and_cached_beside_the_float_graph(tiny_encoder_dir, tmp_path):
    cache = tmp_path / "onnx"
    exact = embedder(tiny_encoder_dir, cache, "onnx").embed(TEXTS)
    quantized = embedder(tiny_encoder_dir, cache, "onnx-int8")
    vectors = quantized.embed(TEXTS)
    assert quantized.runtime == "onnx-int8"
    assert ((vectors * exact).sum(axis=1) > 0.9).all()
    names = sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))
    assert len(names) == 2 and names[1] == names[0] + "-int8"


def test_a_model_that_cannot_be_exported(tiny_encoder_dir, tmp_path, monkeypatch, caplog):
    # A mock, of the exporter only: no small model that torch.export refuses could be
    # built here without depending on which operators this torch version lacks.
    import search.onnx_runtime as onnx_runtime

    def refuse(*_: object) -> None:
        raise ModelIncompatible("tiny cannot be exported to ONNX (UserError: unsupported op)")

    monkeypatch.setattr(onnx_runtime, "_export", refuse)
    folder = Path(shutil.copytree(tiny_encoder_dir, tmp_path / "model"))
    with pytest.raises(ModelIncompatible, match=r"^SIEVE_EMBED_RUNTIME=onnx: tiny cannot"):
        embedder(folder, tmp_path / "onnx", "onnx").embed(TEXTS[:1])
    fallback = embedder(folder, tmp_path / "onnx")
    with caplog.at_level(logging.WARNING, logger="search.embed"):
        assert fallback.embed(TEXTS[:1]).shape == (1, fallback.dim)
    assert fallback.runtime == "torch"
    assert "embedder falls back to torch: tiny cannot be exported" in caplog.text


def test_the_runtime_setting_is_checked():
    with pytest.raises(ConfigError, match="embed_runtime|EMBED_RUNTIME"):
        Settings.from_env({"SIEVE_EMBED_RUNTIME": "tensorrt"})
    with pytest.raises(ConfigError, match="SIEVE_EMBED_RUNTIME must be one of"):
        TransformerEmbedder(runtime="tensorrt")
