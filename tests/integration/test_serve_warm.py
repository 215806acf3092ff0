"""``sieve serve`` warms each worker up before it says ready: the Chinese dictionary,
the embedder and the reranker load after the fork, on a thread, while /healthz
and /readyz answer; the first search after ready loads nothing."""

from __future__ import annotations

import time

import pytest
from support.live_server import sieve_serve

pytestmark = pytest.mark.integration


def test_readyz_says_warming_until_the_models_are_loaded_then_nothing_loads_in_a_query(
    tmp_path, tiny_reranker_dir
):
    env = {
        "SIEVE_DATA_DIR": str(tmp_path / "data"),
        "SIEVE_RERANK_BACKEND": "local",
        "SIEVE_RERANK_MODEL": tiny_reranker_dir.name,
        "SIEVE_RERANK_MODELS_DIR": str(tiny_reranker_dir.parent),
        "SIEVE_RERANK_DEVICE": "cpu",
        "SIEVE_RATE_LIMIT": "",
    }
    # --demo indexes the sample corpus (English and Chinese) before gunicorn starts.
    with sieve_serve(env, "--demo") as served:
        status, body = served.wait_for("/readyz", deadline_s=240)
        # The worker's first answer comes while its warm-up thread loads (seconds of
        # imports and weights), and /healthz answers meanwhile.
        assert status == 503, body
        assert body["reason"].startswith("warming: loading "), body
        assert set(body["warm_up"]) == {"chinese dictionary", "embedder", "reranker"}
        assert "loading" in body["warm_up"].values(), body
        assert served.get("/healthz") == (200, {"status": "ok"})
        deadline = time.monotonic() + 120
        while status != 200:
            assert time.monotonic() < deadline, f"never ready: {body}"
            answer = served.get("/readyz")
            assert answer is not None, "the worker stopped answering while it warmed up"
            status, body = answer
            assert status == 200 or body["reason"].startswith("warming: "), body
        assert body["ready"] is True and "reason" not in body
        assert body["warm_up"] == {"chinese dictionary": "ok", "embedder": "ok", "reranker": "ok"}

        for query in ("how do I descale a kettle", "绿茶怎么冲泡"):
            status, result = served.post("/v1/search", {"query": query, "top_k": 3})
            assert status == 200, result
            assert result["reranked"] is True and result["hits"], result
            assert "load" not in result["timings_ms"], result["timings_ms"]
