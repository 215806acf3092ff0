"""FP16 on CUDA ranks like FP32: the reranker's GPU path on a small random model."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from support.tiny_models import build_tiny_reranker, training_lines

from search.rerank import CrossEncoderReranker

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs CUDA: the reranker uses FP16 only on a GPU"
    ),
]


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Tiny but not trivial: enough depth and width for FP16 rounding to build up.
    return build_tiny_reranker(
        tmp_path_factory.mktemp("models") / "small-reranker",
        hidden=256,
        layers=4,
        heads=4,
        intermediate=1024,
    )


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (ties are vanishingly rare for float logits)."""
    rank_a = np.argsort(np.argsort(a)).astype(float)
    rank_b = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(rank_a, rank_b)[0, 1])


def test_fp16_ranks_200_pairs_like_fp32(small_model_dir):
    rng = random.Random(0)
    lines = [line for line in training_lines(0) if line.strip()]
    fp32 = CrossEncoderReranker(str(small_model_dir), device="cuda", dtype="float32")
    fp16 = CrossEncoderReranker(str(small_model_dir), device="cuda")  # auto: float16 on CUDA
    full: list[float] = []
    half: list[float] = []
    for _ in range(10):  # 10 queries x 20 passages = 200 pairs
        query = rng.choice(lines)[:120]
        passages = rng.sample(lines, 20)
        full += [s.logit for s in fp32.rerank(query, passages).scores]
        half += [s.logit for s in fp16.rerank(query, passages).scores]
    assert next(fp16._model.parameters()).dtype == torch.float16
    assert next(fp32._model.parameters()).dtype == torch.float32
    assert np.std(full) > 0.05  # the model does tell pairs apart, or ranks mean nothing
    assert spearman(full, half) >= 0.99


def test_cuda_batches_are_padded_to_multiples_of_eight(small_model_dir):
    reranker = CrossEncoderReranker(str(small_model_dir), device="cuda")
    reranker.warm_up()
    widths: list[int] = []

    def record(module, args, kwargs):
        widths.append(kwargs["input_ids"].shape[1])

    reranker._model.register_forward_pre_hook(record, with_kwargs=True)
    reranker.rerank("cook rice", ["a short one", "a somewhat longer passage about rice " * 3])
    assert widths and all(width % 8 == 0 for width in widths)


def test_cuda_forward_passes_leave_cudnn_attention_out(small_model_dir):
    reranker = CrossEncoderReranker(str(small_model_dir), device="cuda")
    reranker.warm_up()
    during: list[bool] = []

    def record(module, args, kwargs):
        during.append(torch.backends.cuda.cudnn_sdp_enabled())

    reranker._model.register_forward_pre_hook(record, with_kwargs=True)
    before = torch.backends.cuda.cudnn_sdp_enabled()
    scores = reranker.rerank("cook rice", ["rice in a pot", "a kettle for tea"]).scores
    assert len(scores) == 2 and during and not any(during)
    assert torch.backends.cuda.cudnn_sdp_enabled() == before  # the process's setting is back


def test_the_status_names_the_loaded_cuda_device_and_fp16(tiny_reranker_dir):
    from search.config import Settings
    from search.rerank.status import cuda_present, describe

    reranker = CrossEncoderReranker(str(tiny_reranker_dir), device="auto")
    settings = Settings.from_env({})
    planned = describe(settings, reranker, cuda=cuda_present())
    assert planned.active and not planned.loaded
    assert (planned.device, planned.dtype) == ("cuda", "float16")
    reranker.warm_up()
    loaded = describe(settings, reranker, cuda=cuda_present())
    assert loaded.loaded and (loaded.device, loaded.dtype) == ("cuda", "float16")
