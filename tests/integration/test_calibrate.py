"""``sieve calibrate`` end to end, then the API serving the calibrated model.

A BEIR folder of 30 sample documents and 10 judged queries is written here,
the real command line fits the tiny cross-encoder's calibration beside a copy of
the model, and an app over the same (reused) index serves hits with
``relevance``, drops those under ``min_relevance`` and abstains on ``/v1/context``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from api.app import create_app
from api.settings import ApiSettings, ServiceSettings
from search.calibrate import calibrate_dataset
from search.config import Settings
from search.engine import BLEND_SETTING, SearchEngine
from search.evaluate import Dataset, prepare_index
from search.models import MODEL_CARD, locate
from search.rerank import CachingReranker, CrossEncoderReranker
from search.rerank.blend import GRID
from search.rerank.calibration import CALIBRATION_FILE, load_calibration
from search.scores import LruScoreStore

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample"
QUERY = "how to stop a nosebleed"


def write_beir(folder: Path, model: Path, n_docs: int = 30, n_queries: int = 10) -> Path:
    """30 sample documents and 10 sample queries as a BEIR ``dev`` split.

    A random model agrees with no human judgement, so the judgements are its own:
    each query's two best-scored documents are relevant. The calibration then has
    a real slope to find, which is what the tests need to see (hits with different
    relevance); whether the map is right is the unit tests' business.
    """
    docs = [json.loads(line) for line in (SAMPLE / "corpus.jsonl").open() if line.strip()]
    docs = docs[:n_docs]
    queries = [json.loads(line) for line in (SAMPLE / "queries.jsonl").open() if line.strip()]
    queries = queries[:n_queries]
    judge = CrossEncoderReranker(str(model), models_dir=model.parent)
    passages = [f"{d['title']}\n{d['text']}" if d.get("title") else d["text"] for d in docs]
    rows = []
    for query in queries:
        scores = judge.rerank(query["text"], passages).scores
        best = sorted(range(len(docs)), key=lambda i: -scores[i].logit)[:2]
        rows += [f"{query['_id']}\t{docs[i]['_id']}\t1\n" for i in best]
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (folder / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(rows))
    return folder


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, tiny_reranker_dir) -> dict[str, Path]:
    """Runs ``sieve calibrate`` on a copy of the tiny model (the shared one stays bare)."""
    tmp = tmp_path_factory.mktemp("calibrate")
    model = tmp / "models" / "tiny-reranker"
    shutil.copytree(tiny_reranker_dir, model)
    beir = write_beir(tmp / "beir-small", model)
    data = tmp / "data"
    env = {
        **os.environ,
        "SIEVE_DATA_DIR": str(data),
        "SIEVE_RERANK_BACKEND": "local",
        "SIEVE_RERANK_MODEL": str(model),
        "SIEVE_RERANK_MODELS_DIR": str(model.parent),
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "api",
            "calibrate",
            str(beir),
            "--split",
            "dev",
            "--method",
            "platt",
            "--depth",
            "30",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return {"model": model, "beir": beir, "data": data, "stdout": Path(proc.stdout)}


def test_calibrate_writes_the_calibration_beside_the_model(calibrated):
    model, out = calibrated["model"], str(calibrated["stdout"])
    stored = json.loads((model / CALIBRATION_FILE).read_text())
    assert stored == json.loads(out.strip().splitlines()[-1])
    assert stored["model_fingerprint"] == locate(str(model)).fingerprint
    assert stored["method"] == "platt" and stored["parameters"]["a"] > 0
    fitted = stored["fitted_on"]
    assert fitted["dataset"] == "beir-small" and fitted["split"] == "dev"
    assert (fitted["queries"], fitted["pairs"], fitted["positives"]) == (10, 300, 20)
    assert fitted["depth"] == 30
    assert fitted["ece_after"] <= fitted["ece_before"]
    assert "ECE before (sigmoid)" in out and f"written to {model / CALIBRATION_FILE}" in out
    assert "blend weight" in out and "pure rerank" in out
    assert load_calibration(locate(str(model))) is not None


def test_calibrate_stores_a_blend_weight_with_the_collection_and_it_wins(calibrated, tmp_path):
    model, out = calibrated["model"], str(calibrated["stdout"])
    assert "stored with collection 'default'" in out
    settings = Settings.from_env({}).with_overrides(
        data_dir=calibrated["data"], rerank_blend_weight=7.0
    )
    reranker = CrossEncoderReranker(str(model), models_dir=model.parent)
    with SearchEngine(settings, reranker=reranker) as engine:
        stored = engine.registry.collection_setting("default", BLEND_SETTING)
        assert stored["model_fingerprint"] == locate(str(model)).fingerprint
        assert stored["weight"] in GRID and stored["chosen_on"] == "beir-small/dev"
        assert stored["queries"] == 10
        # The collection's weight wins over SIEVE_RERANK_BLEND_WEIGHT for that collection.
        pipeline = engine.collection("default").pipeline
        assert pipeline.blend_source == "collection"
        assert (pipeline.blend.weight if pipeline.blend else 0.0) == stored["weight"]
        other = engine.collection("other").pipeline
        assert other.blend_source == "setting" and other.blend.weight == 7.0
    # Another model's files (other weights): the stored weight is not theirs.
    other_model = tmp_path / "other"
    other_model.mkdir()
    (other_model / "config.json").write_text("{}")
    with SearchEngine(settings, reranker=CrossEncoderReranker(str(other_model))) as engine:
        assert engine.collection_blend("default") is None


def test_a_model_fine_tuned_on_the_split_is_calibrated_on_its_held_out_queries(
    calibrated, tmp_path
):
    model = tmp_path / "models" / "tuned"
    shutil.copytree(calibrated["model"], model)
    dataset = Dataset.open(calibrated["beir"], "dev")
    held = sorted(dataset.judged()[1])[:3]
    card = {
        "data": {
            "corpus_sha256": dataset.corpus_digest(),
            "split": "dev",
            "validation_queries": 3,
            "validation_ids": held,
        }
    }
    (model / MODEL_CARD).write_text(json.dumps(card))
    settings = Settings.from_env({}).with_overrides(
        data_dir=calibrated["data"],
        rerank_backend="local",
        rerank_model=str(model),
        rerank_models_dir=model.parent,
        collection="tuned",  # the module's other tests read what is stored with "default"
    )
    report = calibrate_dataset(settings, calibrated["beir"], split="dev", depth=30)
    fitted = report.calibration.fitted_on
    assert fitted.split == "dev (held out by the fine-tune)" and fitted.queries == 3
    assert fitted.pairs == 90 and report.path == model / CALIBRATION_FILE
    grid = report.blend["ndcg@10"]
    assert report.collection == "tuned"
    assert grid[f"{report.blend['best']:g}"] == max(grid.values())


def test_calibrate_refuses_the_test_split(calibrated, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "api", "calibrate", str(calibrated["beir"]), "--split", "test"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "SIEVE_DATA_DIR": str(tmp_path)},
    )
    assert proc.returncode == 2 and "'test' is not one of" in proc.stderr


@pytest.fixture(scope="module")
def client(calibrated) -> Iterator[FlaskClient]:
    """An app over the index ``sieve calibrate`` built, reranking with the calibrated copy."""
    model = calibrated["model"]
    base = Settings.from_env({}).with_overrides(data_dir=calibrated["data"])
    settings = prepare_index(base, Dataset.open(calibrated["beir"], "dev"))  # reused, not rebuilt
    inner = CrossEncoderReranker(str(model), models_dir=model.parent)
    reranker = CachingReranker(inner, LruScoreStore(1000), ttl_s=3600)
    with SearchEngine(settings, reranker=reranker) as engine:
        config = ServiceSettings(engine=settings, api=ApiSettings(rate_limit=""))
        yield create_app(config, engine).test_client()


def test_hits_carry_a_calibrated_relevance(client):
    body = client.post("/v1/search", json={"query": QUERY, "collection": "eval"}).json
    relevance = [h["rerank"]["relevance"] for h in body["hits"]]
    assert body["reranked"] and all(r is not None and 0 <= r <= 1 for r in relevance)
    assert relevance == sorted(relevance, reverse=True)  # monotone in the logit


def test_min_relevance_drops_the_hits_below_it(client):
    ask = {"query": QUERY, "collection": "eval", "top_k": 30}
    every = client.post("/v1/search", json={**ask, "min_relevance": 0.0}).json
    assert len(every["hits"]) == 30
    relevance = sorted({h["rerank"]["relevance"] for h in every["hits"]})
    floor = relevance[len(relevance) // 2]
    kept = client.post("/v1/search", json={**ask, "min_relevance": floor}).json
    assert kept["hits"] and all(h["rerank"]["relevance"] >= floor for h in kept["hits"])
    assert len(kept["hits"]) == sum(h["rerank"]["relevance"] >= floor for h in every["hits"])
    assert kept["total_window"] == len(kept["hits"]) < 30


def test_context_abstains_when_nothing_passes(client):
    ask = {"query": QUERY, "collection": "eval"}
    top = max(h["rerank"]["relevance"] for h in client.post("/v1/search", json=ask).json["hits"])
    assert top < 1.0  # a Platt map never reaches 1
    abstained = client.post("/v1/context", json={**ask, "min_relevance": 1.0}).json
    assert abstained["abstained"] is True and abstained["documents"] == []
    assert "1" in abstained["abstain_reason"] and abstained["used_tokens"] > 0
    answered = client.post("/v1/context", json={**ask, "min_relevance": 0.0}).json
    assert answered["abstained"] is False and answered["abstain_reason"] is None
    assert answered["documents"]


def test_the_rerank_api_carries_the_calibrated_relevance(client):
    body = {"query": QUERY, "documents": ["pinch the soft part of the nose", "oil a bike chain"]}
    response = client.post("/v1/rerank", json=body)
    assert response.status_code == 200
    results = response.json["results"]
    assert len(results) == 2 and all(0.0 <= r["relevance"] <= 1.0 for r in results)
    # Calibration keeps the order: the better score has the higher relevance.
    assert results[0]["relevance"] >= results[1]["relevance"]
