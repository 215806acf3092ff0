"""``sieve eval --rerank`` as a user runs it: a generated BEIR folder and the tiny cross-encoder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.cli import sieve

from api.cli import main
from api.cli.search import eval_lines
from search.config import Settings
from search.evaluate import RerankEval, evaluate_dataset
from search.models import MODEL_CARD

pytestmark = pytest.mark.e2e

TOPICS = [
    ("cast iron", "pan", "season the skillet with oil and never soak it"),
    ("tomato", "garden", "stake the plants and water the soil in the morning"),
    ("bike tyre", "puncture", "find the hole with soapy water and patch the tube"),
    ("nosebleed", "first aid", "pinch the soft part of the nose and lean forward"),
    ("router", "network", "restart the router and check the cable lights"),
    ("jet lag", "travel", "shift your sleep an hour a day before the flight"),
    ("compost", "soil", "mix green and brown waste and turn the heap weekly"),
    ("rice", "cooking", "rinse the grains and simmer with a lid for twenty minutes"),
    ("bee sting", "first aid", "scrape the sting out and cool the skin with ice"),
    ("printer", "office", "clear the paper jam and reinstall the toner cartridge"),
]
QUERIES = {  # query id -> (text, split, the topic it asks about)
    "q1": ("how do I look after a cast iron pan", "test", 0),
    "q2": ("growing tomato plants in the garden", "test", 1),
    "q3": ("fix a bike tyre puncture", "test", 2),
    "q4": ("stop a nosebleed", "test", 3),
    "q5": ("my router network keeps dropping", "test", 4),
    "q6": ("beat jet lag when I travel", "test", 5),
    "q7": ("start a compost heap", "test", 6),
    "q8": ("cook rice on the stove", "test", 7),
    "q9": ("treat a bee sting", "train", 8),
    "q10": ("printer paper jam", "train", 9),
    "q11": ("compost soil waste", "train", 6),
    "q12": ("rinse rice grains", "train", 7),
}


def write_beir(root: Path) -> Path:
    """30 documents (three per topic, the first the relevant one), 8 test and 4 train queries."""
    (root / "qrels").mkdir(parents=True)
    docs = []
    for t, (subject, area, advice) in enumerate(TOPICS):
        docs.append({"_id": f"d{t}-0", "title": f"{subject} care", "text": f"{subject}: {advice}."})
        docs.append({"_id": f"d{t}-1", "title": area, "text": f"Notes on {area} and {subject}."})
        docs.append({"_id": f"d{t}-2", "title": area, "text": f"A story about {area} days."})
    lines = [json.dumps(d) for d in docs]
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    queries = [json.dumps({"_id": q, "text": text}) for q, (text, _, _) in QUERIES.items()]
    (root / "queries.jsonl").write_text("\n".join(queries) + "\n", encoding="utf-8")
    for split in ("test", "train"):
        rows = ["query-id\tcorpus-id\tscore"]
        for q, (_, s, t) in QUERIES.items():
            if s == split:
                rows += [f"{q}\td{t}-0\t2", f"{q}\td{t}-1\t1"]
        (root / "qrels" / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def beir(tmp_path_factory) -> Path:
    return write_beir(tmp_path_factory.mktemp("beir") / "tiny-beir")


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_reranker_dir) -> dict[str, str]:
    return {
        "SIEVE_DATA_DIR": str(tmp_path_factory.mktemp("eval-data")),
        "SIEVE_RERANK_MODEL": tiny_reranker_dir.name,
        "SIEVE_RERANK_MODELS_DIR": str(tiny_reranker_dir.parent),
        "SIEVE_RERANK_TIMEOUT_S": "60",  # a slow shared CI machine must not degrade a query
        "HF_HUB_OFFLINE": "1",
    }


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def check_rerank_row(row: dict, queries: int) -> None:
    for metric in ("ndcg@10", "recall@100", "mrr@10"):
        assert 0.0 <= row[metric] <= 1.0
    assert 0 < row["rerank_p50_ms"] <= row["rerank_p95_ms"] <= row["p95_ms"]
    assert row["wins"] + row["losses"] + row["ties"] == queries
    assert row["reranked"] == queries


def test_eval_rerank_reports_the_reranked_and_blended_rows(env, beir, tmp_path):
    run_file = tmp_path / "run.json"
    args = ("eval", str(beir), "--mode", "hybrid", "--rerank", "--blend-weight", "10000")
    proc = sieve(env, *args, "--save-run", str(run_file), "--json")
    report = last_json(proc.stdout)
    assert report["queries"] == 8
    assert report["reranker"]["depth"] == 50 and "tiny-reranker" in report["reranker"]["model"]
    results = report["results"]
    assert list(results) == ["hybrid", "rerank", "rerank_blend"]
    check_rerank_row(results["rerank"], 8)
    check_rerank_row(results["rerank_blend"], 8)
    assert "blend_weight" not in results["rerank"]
    assert results["rerank_blend"]["blend_weight"] == 10000
    # The whole (30-document) head is reranked: the same documents, in another order.
    runs = json.loads(run_file.read_text())
    assert all(sorted(runs["rerank"][q]) == sorted(runs["hybrid"][q]) for q in runs["hybrid"])
    # Weight 10000 gives the retrieval order back, so it matches hybrid query by query.
    assert runs["rerank_blend"] == runs["hybrid"]
    assert results["rerank_blend"]["ties"] == 8
    assert results["rerank_blend"]["ndcg@10"] == results["hybrid"]["ndcg@10"]
    table = proc.stdout
    assert "rerank: nDCG@10" in table and "rerank_blend: nDCG@10" in table
    assert "rerank p50" in table and "vs hybrid +" in table and "(blend 10000)" in table


def test_tune_blend_chooses_the_best_weight_on_the_train_split(env, beir):
    # In-process (the index the CLI test built is reused): the same code the CLI calls.
    settings = Settings(
        data_dir=Path(env["SIEVE_DATA_DIR"]),
        rerank_model=env["SIEVE_RERANK_MODEL"],
        rerank_models_dir=Path(env["SIEVE_RERANK_MODELS_DIR"]),
        rerank_timeout_s=60.0,
    )
    plan = RerankEval(tune_split="train", grid=(0.0, 1.0, 10000.0))
    report = evaluate_dataset(settings, beir, modes=["bm25"], rerank=plan)
    tuning = report["blend_tuning"]
    assert tuning["split"] == "train" and tuning["queries"] == 4
    assert list(tuning["ndcg@10"]) == ["0", "1", "10000"]
    assert tuning["ndcg@10"][f"{tuning['weight']:g}"] == max(tuning["ndcg@10"].values())
    results = report["results"]
    assert list(results) == ["bm25", "hybrid", "rerank", "rerank_blend"]
    assert results["rerank_blend"]["blend_weight"] == tuning["weight"]
    check_rerank_row(results["rerank_blend"], 8)
    lines = eval_lines(report)
    assert lines[0].startswith(f"blend weight {tuning['weight']:g} chosen on train (4 queries)")
    assert len(lines) == 6 and "(blend " in lines[-1]
    # The hybrid row says what fused it (the bm25 row fused nothing).
    assert lines[3] == "    hybrid: fused by bounded (0.3, 0.7) from the setting on 8 of 8 queries"


def test_eval_rerank_blends_as_a_served_search_would(env, beir, tiny_reranker_dir, tmp_path):
    # No --blend-weight: the blended row uses the weight a served search resolves,
    # here the one a fine-tune wrote in the model card.
    model = tmp_path / "models" / "carded"
    shutil.copytree(tiny_reranker_dir, model)
    (model / MODEL_CARD).write_text(json.dumps({"blend": {"weight": 10000}}))
    settings = Settings(
        data_dir=Path(env["SIEVE_DATA_DIR"]),
        rerank_model=str(model),
        rerank_models_dir=model.parent,
        rerank_timeout_s=60.0,
    )
    report = evaluate_dataset(settings, beir, modes=["hybrid"], rerank=RerankEval())
    assert report["blend_source"] == "card"
    assert report["results"]["rerank_blend"]["blend_weight"] == 10000
    assert report["results"]["rerank_blend"]["ties"] == 8  # the retrieval order back


@pytest.mark.parametrize("backend", ["auto", "local"])
def test_eval_rerank_without_a_reranker_is_one_line(env, beir, tmp_path, backend):
    bad = {
        **env,
        "SIEVE_RERANK_MODEL": "absent/model",
        "SIEVE_RERANK_MODELS_DIR": str(tmp_path),
        "SIEVE_RERANK_BACKEND": backend,
    }
    result = CliRunner().invoke(main, ["eval", str(beir), "--rerank"], env=bad)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no reranker is available")
    assert "absent/model" in lines[0] and str(tmp_path) in lines[0]


def test_rerank_options_need_rerank(env, beir):
    for args in (["--tune-blend"], ["--blend-weight", "1"], ["--rerank-depth", "5"]):
        result = CliRunner().invoke(main, ["eval", str(beir), *args], env=env)
        assert result.exit_code == 2 and "needs --rerank" in result.output, args
    both = ["eval", str(beir), "--rerank", "--tune-blend", "--blend-weight", "1"]
    result = CliRunner().invoke(main, both, env=env)
    assert result.exit_code == 2 and "drop --blend-weight" in result.output
