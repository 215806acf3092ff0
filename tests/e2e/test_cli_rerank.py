"""``sieve rerank`` and ``sieve compare`` as a user runs them, with the tiny cross-encoder."""

from __future__ import annotations

import json

import pytest
from support.cli import ROOT, sieve

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_reranker_dir) -> dict[str, str]:
    data = tmp_path_factory.mktemp("rerank-cli")
    return {
        "SIEVE_DATA_DIR": str(data),
        "SIEVE_RERANK_BACKEND": "local",
        "SIEVE_RERANK_MODEL": str(tiny_reranker_dir),
        "HF_HUB_OFFLINE": "1",
    }


def test_rerank_scores_given_texts(env):
    docs = ["Pinch the soft part of the nose.", "Stadium seats high up.", "Tilt forward."]
    out = sieve(env, "rerank", "stop a nosebleed", *docs, "--json").stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert sorted(r["index"] for r in result["results"]) == [0, 1, 2]
    logits = [r["logit"] for r in result["results"]]
    assert logits == sorted(logits, reverse=True)
    assert all(0 < r["score"] < 1 for r in result["results"])
    text = sieve(env, "rerank", "stop a nosebleed", *docs).stdout
    assert "model " in text and "logit" in text


def test_compare_shows_both_orders_and_timings(env):
    sieve(env, "index", str(ROOT / "sample" / "corpus.jsonl"))
    out = sieve(env, "compare", "how do I fix a flat tire on my bike", "--top-k", "5").stdout
    lines = out.splitlines()
    assert "retrieval order" in out and "reranked" in out and "not reranked" not in out
    assert "rerank_model=" in lines[0] and "bm25=" in lines[0]
    rows = [line for line in lines if "█" in line]
    assert len(rows) == 5
    assert all(any(arrow in row for arrow in ("↑", "↓", "=")) for row in rows)


def test_rerank_without_a_model_is_one_line_error(env, tmp_path):
    bad = {**env, "SIEVE_RERANK_MODEL": "absent/model", "SIEVE_RERANK_MODELS_DIR": str(tmp_path)}
    proc = sieve(bad, "rerank", "query", "doc", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "absent/model" in proc.stderr and str(tmp_path) in proc.stderr


def test_compare_without_a_reranker_shows_retrieval_then_why_and_the_fix(tmp_path):
    env = {
        "SIEVE_DATA_DIR": str(tmp_path / "data"),
        "SIEVE_RERANK_BACKEND": "auto",
        "SIEVE_RERANK_MODEL": "acme/absent",
        "SIEVE_RERANK_MODELS_DIR": str(tmp_path / "models"),
        "HF_HUB_OFFLINE": "1",
    }
    sieve(env, "index", str(ROOT / "sample" / "corpus.jsonl"))
    run = sieve(env, "compare", "how do I fix a flat tire", "--top-k", "5", check=False)
    assert run.returncode == 0, run.stderr  # informational: nothing failed
    lines = run.stdout.splitlines()
    assert "bm25=" in lines[0] and "vector=" in lines[0] and "(not reranked)" in run.stdout
    assert len([line for line in lines if "█" in line]) == 5  # the retrieval order, with bars
    assert lines[-1] == (
        "reranker: none: the reranker model 'acme/absent' is not on this machine "
        f"(models folder {tmp_path / 'models'}, SIEVE_RERANK_MODELS_DIR). "
        "Fix: sieve models pull acme/absent"
    )
