"""The GPU benchmark's entry points, run where they can be here: so that they cannot rot.

``bench/rerank.py`` end to end on CPU with the tiny model (the same code path as the GPU
run, minus CUDA), and ``bench/gpu.sh`` refusing, in one line, a machine without CUDA.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_rerank_bench_runs_on_cpu_with_the_tiny_model(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_rerank_run", REPO / "bench" / "rerank.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "results"
    argv = ["--device", "cpu", "--arch", "tiny", "--synthetic", "--queries", "2"]
    argv += ["--depths", "3,5", "--systems", "sieve,flagembedding", "--out", str(out)]
    assert bench.main([*argv, "--meta", "gpu_tests=not run"]) == 0
    report = json.loads((out / "rerank.json").read_text())
    sieve = [r for r in report["rows"] if r["system"] == "sieve CrossEncoderReranker"]
    assert [r["depth"] for r in sieve] == [3, 5]
    assert all(r["calls"] == 2 and r["pairs_per_s"] > 0 and 0 < r["mfu"] < 1 for r in sieve)
    assert all(r["peak_gpu_mib"] is None for r in sieve)  # CPU: no GPU memory to report
    assert report["meta"]["recorded"] == {"gpu_tests": "not run"}
    # FlagEmbedding is either measured or named as skipped, never silently missing.
    assert any(r["system"] == "FlagEmbedding FlagReranker" for r in report["rows"])
    table = (out / "rerank.md").read_text()
    assert "| sieve CrossEncoderReranker | 5 |" in table


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or __import__("torch").cuda.is_available(),
    reason="checks the refusal on a machine without CUDA",
)
def test_gpu_script_fails_fast_without_cuda(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, SIEVE_BENCH_OUT=str(tmp_path / "out"))
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "bench/gpu.sh: no CUDA device" in done.stderr and "GPU host" in done.stderr
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_rerank_bench_names_the_systems_it_knows():
    spec = importlib.util.spec_from_file_location("bench_rerank_args", REPO / "bench" / "rerank.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.systems_arg("sieve, sieve-cudnn,sieve") == ["sieve", "sieve-cudnn"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown system nope; choose from sieve"):
        bench.systems_arg("sieve,nope")
