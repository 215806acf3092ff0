#!/usr/bin/env bash
# The GPU path measured in one call (about 5 minutes on an H200; bounded at 8):
#   1. the `gpu` tests (FP16 ranks like FP32, batch shapes, ...);
#   2. bench/rerank.py with the bge-reranker-v2-m3 shape in FP16 on SciFact top-50 and
#      top-100 lists (synthetic lists at SciFact lengths when ../shared/data/scifact is
#      absent): p50/p99, pairs/s, MFU against a matmul rate measured in the same run, peak
#      GPU memory, against sentence-transformers' CrossEncoder and FlagEmbedding's
#      FlagReranker in FP16 when those are importable (skipped, with the reason, if not).
# Writes rerank.json and rerank.md (plus the tests' log) under bench/results/gpu-<time>/
# or $SIEVE_BENCH_OUT. Exits 2 at once, saying why, on a machine without CUDA.
#
#   bench/gpu.sh                      # from the repository root
#   PYTHON=/path/to/python bench/gpu.sh
set -euo pipefail

cd "$(dirname "$0")/.."
# Another interpreter (PYTHON=...) may not have the project installed: the tests and the
# benchmark import it from this checkout.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3 || true)"
if [ -z "$PY" ]; then
    echo "bench/gpu.sh: no Python found: set PYTHON or create .venv (make venv)" >&2
    exit 2
fi

# Fail fast and clearly: everything below needs a CUDA build of torch and a visible GPU.
if ! "$PY" - <<'EOF'
import sys
try:
    import torch
except ImportError as exc:
    sys.exit(f"bench/gpu.sh: torch is not importable ({exc}); install the project first")
if not torch.cuda.is_available():
    sys.exit(
        f"bench/gpu.sh: no CUDA device: torch {torch.__version__} (CUDA build: "
        f"{torch.version.cuda or 'none'}) sees no GPU. This script measures the GPU path; "
        "run it on a GPU host with a CUDA build of torch (see README)."
    )
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
then
    exit 2
fi

OUT="${SIEVE_BENCH_OUT:-bench/results/gpu-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
echo "results: $OUT"

# 1. The gpu tests, bounded so that a hang cannot eat the benchmark's time.
tests_rc=0
timeout 150 "$PY" -m pytest -m gpu tests/gpu -q -p no:cacheprovider 2>&1 \
    | tee "$OUT/pytest-gpu.txt" || tests_rc=${PIPESTATUS[0]}
tests_line="$(grep -E '(passed|failed|error|skipped|no tests ran)' "$OUT/pytest-gpu.txt" | tail -n 1 || true)"
[ "$tests_rc" -eq 124 ] && tests_line="timed out after 150 s"

# 2. The reranker benchmark: top-50 and top-100 on the same loaded systems.
bench_rc=0
timeout 330 "$PY" bench/rerank.py \
    --device cuda --arch bge-m3-large --depths 50,100 --queries 30 \
    --build-dir "${SIEVE_BENCH_BUILD:-bench/results/build-bge-m3-large}" \
    --out "$OUT" \
    --meta "gpu_tests=rc $tests_rc: ${tests_line:-no summary}" \
    2>&1 | tee "$OUT/rerank.log" || bench_rc=${PIPESTATUS[0]}
[ "$bench_rc" -eq 124 ] && echo "bench/gpu.sh: bench/rerank.py ran past its 330 s bound" >&2

echo
[ -f "$OUT/rerank.md" ] && cat "$OUT/rerank.md"
echo "gpu tests: rc $tests_rc (${tests_line:-no summary}); benchmark: rc $bench_rc; files in $OUT"
if [ "$tests_rc" -ne 0 ] || [ "$bench_rc" -ne 0 ]; then
    exit 1
fi
