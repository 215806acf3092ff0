"""bench/rerank.py's CPU-reachable parts: arguments, the synthetic workload, the table."""

from __future__ import annotations

import argparse
import types

import pytest
from support.bench_scripts import load_bench

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def bench() -> types.ModuleType:
    return load_bench("rerank")


def test_depths_and_meta_arguments(bench):
    assert bench.parse_args(["--depths", "100,50,50"]).depths == [50, 100]
    assert bench.parse_args(["--depth", "50"]).depths == [50]  # the old spelling
    assert bench.parse_args(["--meta", "gpu_tests= 3 passed ", "--meta", "a=b=c"]).meta == [
        ("gpu_tests", "3 passed"),
        ("a", "b=c"),
    ]
    for bad in ("0,50", "fifty", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.depths_arg(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        bench.meta_arg("no-equals")


def test_bad_arguments_exit_with_one_line(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--queries", "1"])
    assert "--queries must be at least 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--depths", "-5"])
    assert "every depth must be at least 1" in capsys.readouterr().err


def test_cuda_asked_for_without_one_is_a_clear_error(bench):
    no_cuda = types.SimpleNamespace(
        cuda=types.SimpleNamespace(is_available=lambda: False),
        version=types.SimpleNamespace(cuda=None),
        __version__="2.x+cpu",
    )
    with pytest.raises(SystemExit, match=r"--device cuda: no CUDA device.*torch 2\.x\+cpu"):
        bench.pick_device(no_cuda, "cuda")
    assert bench.pick_device(no_cuda, "auto") == "cpu"
    assert bench.pick_device(no_cuda, "cpu") == "cpu"


def test_synthetic_lists_have_scifact_lengths(bench):
    workload, how, texts = bench.synthetic_workload(4, 100)
    assert len(workload) == 4 and all(len(passages) == 100 for _, passages in workload)
    assert "synthetic" in how and len(texts) == 400
    words = sorted(len(p.split()) for _, passages in workload for p in passages)
    median = words[len(words) // 2]
    assert 0.8 * bench.PASSAGE_WORDS_MEDIAN <= median <= 1.2 * bench.PASSAGE_WORDS_MEDIAN
    assert words[-1] > 400  # a long tail past the 512-token limit, as real abstracts have
    low, high = bench.QUERY_WORDS
    assert all(low <= len(q.split()) <= high for q, _ in workload)
    assert bench.synthetic_workload(4, 100) == (workload, how, texts)  # seeded


def test_markdown_table_has_a_row_per_system_and_depth(bench):
    meta = {
        "device": "NVIDIA H200",
        "torch": "2.x",
        "model": "bge-m3-large",
        "workload": "SciFact",
        "peak_flops": 7.5e14,
        "peak_measured_with": "bf16 8192^3 matmul",
        "recorded": {"gpu_tests": "rc 0: 4 passed"},
    }
    ok = {
        "system": "sieve",
        "status": "ok",
        "depth": 50,
        "note": "torch.float16",
        "pairs_per_s": 2500.04,
        "p50_ms": 19.96,
        "p99_ms": 24.0,
        "peak_gpu_mib": 1210.4,
        "mfu": 0.4123,
    }
    rows = [
        ok,
        {**ok, "depth": 100, "p50_ms": 38.0},
        {"system": "FlagEmbedding FlagReranker", "status": "not installed", "note": "no module"},
    ]
    table = bench.markdown_table(meta, rows)
    assert "| sieve | 50 | 2500.0 | 20.0 | 24.0 | 1210 | 41.2% |" in table
    assert "| sieve | 100 | 2500.0 | 38.0 |" in table
    assert "| FlagEmbedding FlagReranker | - | not installed (no module) |" in table
    assert "750.0 TFLOP/s" in table and "gpu_tests: rc 0: 4 passed" in table
    assert "- sieve: torch.float16" in table
    header = next(line for line in table.splitlines() if line.startswith("| system"))
    assert all(
        line.count("|") == header.count("|") for line in table.splitlines() if line[:1] == "|"
    )
