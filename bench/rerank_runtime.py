"""The cross-encoder's runtimes side by side on a CPU: torch, ONNX Runtime, ONNX Runtime int8.

For each model and each runtime of ``CrossEncoderReranker`` (``SIEVE_RERANK_RUNTIME``),
in one run: the latency of a top-``--depth`` rerank (p50/p95 over ``--queries`` calls,
the runtimes taking turns query by query so that load on a shared machine falls on all
alike, after two warm-up calls each), the one-off export and quantisation time, and how
far each ONNX runtime's logits are from torch's (max absolute difference, and the mean
per-query Spearman correlation of the orders).

Models (``--models``): ``tiny``, the tests' random XLM-R reranker; ``minilm``, a
cross-encoder of realistic size built from the bundled all-MiniLM-L6-v2 weights with a
new, UNTRAINED one-logit head (``AutoModelForSequenceClassification(num_labels=1)``):
its scores mean nothing, its timing and the runtimes' agreement are real.

Workload: the lists of ``bench/rerank.py`` (SciFact documents at ``--data``, BM25 top-k
when bm25s is installed, else random documents: real passage lengths either way;
``--synthetic`` for generated ones). Graphs are exported to a fresh temporary cache.

    python bench/rerank_runtime.py [--queries 20] [--depth 50] [--models tiny,minilm]
        [--max-length 512] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from search.rerank import CrossEncoderReranker  # noqa: E402

RUNTIMES = ("torch", "onnx", "onnx-int8")


def _bench_rerank() -> Any:
    """``bench/rerank.py`` as a module: its workloads are this bench's too."""
    spec = importlib.util.spec_from_file_location("bench_rerank", REPO / "bench" / "rerank.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(name: str, folder: Path) -> Path:
    """The model folder for ``name`` (see the module docstring)."""
    if name == "tiny":
        from support.tiny_models import build_tiny_reranker

        return build_tiny_reranker(folder / "tiny-reranker")
    if name == "minilm":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from search.models import bundled_model_path

        source = bundled_model_path()
        if source is None:
            sys.exit("the bundled all-MiniLM-L6-v2 package is not installed")
        target = folder / "minilm-cross-encoder"
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
        model.save_pretrained(target)
        AutoTokenizer.from_pretrained(source).save_pretrained(target)
        return target
    sys.exit(f"unknown model {name!r}; choose tiny or minilm")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation of two score lists (no ties in float logits)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def measure(path: Path, workload: list[tuple[str, list[str]]], args: argparse.Namespace) -> dict:
    cache = path.parent / f"onnx-{path.name}"  # fresh: the export is timed too
    rerankers, load_s = {}, {}
    for runtime in RUNTIMES:
        r = CrossEncoderReranker(
            str(path),
            device="cpu",
            max_length=args.max_length,
            runtime=runtime,
            onnx_cache=str(cache),
        )
        started = time.perf_counter()
        r.warm_up()  # onnx: the export; onnx-int8: the quantisation of that export
        load_s[runtime] = time.perf_counter() - started
        rerankers[runtime] = r
    for query, passages in workload[:2]:
        for r in rerankers.values():
            r.rerank(query, passages)
    times: dict[str, list[float]] = {rt: [] for rt in RUNTIMES}
    scores: dict[str, list[np.ndarray]] = {rt: [] for rt in RUNTIMES}
    for query, passages in workload:
        for runtime, r in rerankers.items():
            started = time.perf_counter()
            batch = r.rerank(query, passages)
            times[runtime].append((time.perf_counter() - started) * 1e3)
            scores[runtime].append(np.array([s.logit for s in batch.scores]))
    rows = {}
    for runtime in RUNTIMES:
        pairs = list(zip(scores[runtime], scores["torch"], strict=True))
        diff = max(float(np.abs(a - b).max()) for a, b in pairs)
        rho = statistics.mean(spearman(a, b) for a, b in pairs)
        rows[runtime] = {
            "p50_ms": round(statistics.median(times[runtime]), 1),
            "p95_ms": round(float(np.percentile(times[runtime], 95)), 1),
            "load_s": round(load_s[runtime], 2),
            "max_abs_diff_vs_torch": float(f"{diff:.2g}"),
            "spearman_vs_torch": round(rho, 4),
        }
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "scifact")
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--models", default="tiny,minilm")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    import onnxruntime
    import torch

    bench = _bench_rerank()
    if args.synthetic:
        workload, how, _ = bench.synthetic_workload(args.queries, args.depth)
    else:
        workload, how, _ = bench.load_workload(args.data, args.queries, args.depth)
    report: dict[str, Any] = {
        "workload": how,
        "queries": len(workload),
        "max_length": args.max_length,
        "torch": f"{torch.__version__}, {torch.get_num_threads()} threads",
        "onnxruntime": onnxruntime.__version__,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            path = build(name, Path(folder))
            report["models"][name] = measure(path, workload, args)
            print(name, json.dumps(report["models"][name], indent=1), flush=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
