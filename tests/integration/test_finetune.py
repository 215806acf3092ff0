"""``sieve finetune`` end to end on a generated BEIR folder, with the tiny cross-encoder.

Real engines (tantivy, Qdrant Edge, the bundled embedder) mine the negatives;
the corpus is indexed once per module (``prepare_index`` reuses it).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from support.beir_data import write_beir
from support.cli import ROOT

from api.cli import main
from search.config import Settings
from search.finetune import FinetuneConfig, finetune, split_by_query
from search.finetune.data import build_groups, mine_negatives
from search.finetune.model import CrossEncoder
from search.finetune.source import from_dataset, passage
from search.finetune.train import _optimizer
from search.models import MODEL_CARD, bundled_model_path, locate
from search.rerank import CrossEncoderReranker
from search.rerank.base import card_of
from search.rerank.blend import GRID, card_blend_weight, resolve_blend
from search.rerank.calibration import load_calibration
from search.types import Document

pytestmark = pytest.mark.integration

FAST = {"batch_size": 4, "lr": 3e-4, "max_length": 64, "warmup": 0.0}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_beir(tmp_path_factory.mktemp("beir") / "tiny-beir")


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return Settings.from_env({}).with_overrides(data_dir=tmp_path_factory.mktemp("ft-data"))


@pytest.fixture(scope="module")
def trained(settings, dataset, tiny_reranker_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "model"
    steps = []
    config = FinetuneConfig(epochs=2, evals_per_epoch=1, **FAST)
    with from_dataset(settings, dataset) as source:
        result = finetune(source, locate(str(tiny_reranker_dir)), out, config, on_step=steps.append)
        # The same training groups, to compare the loss before and after on them.
        split = split_by_query(source.data.judged(), config.val_fraction, config.seed)
        pools = mine_negatives(source.data, split.train, source.retrieve, source.text_of)
        groups = build_groups(
            source.data, split.train, pools, source.text_of, 7, random.Random(1), source.filler
        )
    return result, steps, groups


def test_training_lowers_the_loss_and_writes_a_loadable_model(trained, tiny_reranker_dir):
    result, steps, groups = trained
    assert result.stopped == "completed" and len(steps) == result.card["steps"] == 6
    assert all(s.pairs_per_s > 0 and s.total == 6 for s in steps)
    start = CrossEncoder.load(tiny_reranker_dir, max_length=64)
    tuned = CrossEncoder.load(result.out, max_length=64)
    with torch.no_grad():
        assert float(tuned.loss(groups)) < float(start.loss(groups))
    reranker = CrossEncoderReranker(str(result.out))
    batch = reranker.rerank("water heat", ["water and heat", "bike chain"])
    assert len(batch.scores) == 2 and all(0 < s.score < 1 for s in batch.scores)
    assert not list(result.out.parent.glob(".model*"))  # no temporary folder is left


def test_card_records_base_data_hyperparameters_and_metrics(trained, tiny_reranker_dir):
    result, _, _ = trained
    card = json.loads((result.out / MODEL_CARD).read_text())
    assert card == result.card
    assert card["base_model"]["fingerprint"] == locate(str(tiny_reranker_dir)).fingerprint
    assert len(card["data"]["fingerprint"]) == 16
    assert card["data"]["train_queries"] == 12 and card["data"]["validation_queries"] == 1
    assert card["hyperparameters"]["negatives"] == 7 and card["hyperparameters"]["lr"] == 3e-4
    validation = card["metrics"]["validation"]
    assert set(validation) == {"before", "start", "after"}
    assert {"ndcg@10", "mrr@10"} <= set(validation["before"]) and validation["after"]
    assert {"ndcg@10", "mrr@10"} <= set(validation["start"])  # a reranker: its head is trained
    assert result.before == validation["before"] and result.after == validation["after"]
    assert card["created"] and card["wall_time_s"] > 0 and card["stopped"] == "completed"
    assert card["better_than_no_rerank"] == result.better


def test_held_out_queries_choose_the_blend_and_fit_the_calibration(trained):
    result, _, _ = trained
    card = result.card
    assert len(card["data"]["validation_ids"]) == card["data"]["validation_queries"] == 1
    blend = card["blend"]
    assert blend["chosen_on"] == "validation" and blend["queries"] == 1
    assert blend["weight"] in GRID and set(blend["ndcg@10"]) == {f"{w:g}" for w in GRID}
    assert blend["ndcg@10"][f"{blend['best']:g}"] == max(blend["ndcg@10"].values())
    assert blend["weight"] == (blend["best"] if blend["adopted"] else max(GRID))
    calibration = load_calibration(locate(str(result.out)))
    assert calibration is not None and calibration.fitted_on.split == "validation"
    assert card["calibration"] == {
        "method": calibration.method,
        "ece": calibration.fitted_on.ece_after,
    }


def test_ctrl_c_keeps_the_best_checkpoint(settings, dataset, tiny_reranker_dir, tmp_path):
    def interrupt_at_step_2(step):
        if step.step == 2:
            raise KeyboardInterrupt

    out = tmp_path / "model"
    # Three steps an epoch, one evaluation each: step 1 is validated and saved.
    config = FinetuneConfig(epochs=1, evals_per_epoch=3, **FAST)
    with from_dataset(settings, dataset) as source:
        start = locate(str(tiny_reranker_dir))
        result = finetune(source, start, out, config, on_step=interrupt_at_step_2)
    assert result.stopped == "interrupted"
    card = json.loads((out / MODEL_CARD).read_text())
    assert card["stopped"] == "interrupted" and card["metrics"]["best_step"] == 1
    assert len(CrossEncoderReranker(str(out)).rerank("q", ["a passage"]).scores) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_ctrl_c_before_any_validation_saves_the_weights(
    settings, dataset, tiny_reranker_dir, tmp_path
):
    def interrupt(step):
        raise KeyboardInterrupt

    with from_dataset(settings, dataset) as source:
        start = locate(str(tiny_reranker_dir))
        result = finetune(source, start, tmp_path / "m", FinetuneConfig(**FAST), on_step=interrupt)
    assert result.stopped == "interrupted" and result.after is None
    assert len(CrossEncoderReranker(str(tmp_path / "m")).rerank("q", ["p"]).scores) == 1


def test_a_plain_encoder_gets_a_one_logit_head(settings, dataset, tmp_path):
    encoder = bundled_model_path()
    assert encoder is not None
    assert json.loads((encoder / "config.json").read_text())["architectures"] == ["BertModel"]
    config = FinetuneConfig(max_steps=1, batch_size=2, negatives=3, max_length=48, rerank_depth=5)
    with from_dataset(settings, dataset, limit=4) as source:
        result = finetune(source, locate(str(encoder)), tmp_path / "m", config)
    assert result.stopped == "max_steps"
    # A new head orders candidates at random: not worth a validation pass.
    assert result.card["metrics"]["validation"]["start"] == "new head, not validated"
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["architectures"] == ["BertForSequenceClassification"]
    reranker = CrossEncoderReranker(str(tmp_path / "m"), max_length=48)
    assert len(reranker.rerank("water heat", ["water", "bike"]).scores) == 2


def test_cli_trains_from_a_folder_and_from_pairs(settings, dataset, tiny_reranker_dir, tmp_path):
    env = {"SIEVE_DATA_DIR": str(settings.data_dir), "SIEVE_RERANK_BACKEND": "none"}
    common = ["--base", str(tiny_reranker_dir), "--epochs", "1", "--max-length", "64"]
    run = CliRunner().invoke(
        main, ["finetune", str(dataset), "--out", str(tmp_path / "a"), *common], env=env
    )
    assert run.exit_code == 0, run.output
    assert "verdict: " in run.stdout.splitlines()[-1]
    assert "configured reranker is unchanged" in run.stdout
    assert "blend weight " in run.stdout and "on 1 validation queries" in run.stdout
    saved = json.loads((tmp_path / "a" / MODEL_CARD).read_text())
    assert saved["blend"]["chosen_on"] == "validation" and saved["blend"]["weight"] in GRID
    # At query time the card's weight is used while SIEVE_RERANK_BLEND_WEIGHT is unset.
    tuned = CrossEncoderReranker(str(tmp_path / "a"))
    assert (
        resolve_blend(collection=None, setting=None, card=card_blend_weight(card_of(tuned)))[1]
        == "card"
    )
    again = CliRunner().invoke(
        main, ["finetune", str(dataset), "--out", str(tmp_path / "a"), *common], env=env
    )
    assert again.exit_code == 2 and "--overwrite" in again.output

    # Pairs over an indexed collection: the corpus indexed with the CLI's own engine.
    docs = [json.loads(line) for line in (dataset / "corpus.jsonl").read_text().splitlines()]
    from search.engine import SearchEngine

    with SearchEngine(settings, reranker=None) as engine:
        engine.index([Document(d["_id"], d["text"], d["title"]) for d in docs], "ft")
        assert passage(docs[0]["title"], docs[0]["text"]).startswith(docs[0]["title"] + "\n")
    pairs = tmp_path / "pairs.jsonl"
    queries = [json.loads(line) for line in (dataset / "queries.jsonl").read_text().splitlines()]
    lines = [
        {"query": q["text"], "positives": [f"d{i}"], "negatives": ["d20"] if i == 0 else []}
        for i, q in enumerate(queries)
    ]
    pairs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    run = CliRunner().invoke(
        main,
        [
            "--collection",
            "ft",
            "finetune",
            "--pairs",
            str(pairs),
            "--out",
            str(tmp_path / "b"),
            *common,
            "--json",
        ],
        env=env,
    )
    assert run.exit_code == 0, run.output
    card = json.loads(run.stdout.strip().splitlines()[-1])
    assert card["data"]["source"] == "pairs" and card["data"]["collection"] == "ft"
    assert CrossEncoderReranker(str(tmp_path / "b")).rerank("q", ["p"]).scores


def test_ctrl_c_on_the_command_exits_130_with_a_loadable_model(
    dataset, tiny_reranker_dir, tmp_path
):
    out = tmp_path / "model"
    card = out / MODEL_CARD
    env = {**os.environ, "SIEVE_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}
    # Epochs and patience without end: only the Ctrl-C stops it.
    command = [sys.executable, "-m", "api", "finetune", str(dataset), "--out", str(out)]
    command += ["--base", str(tiny_reranker_dir), "--device", "cpu", "--epochs", "100000"]
    command += ["--patience", "100000", "--evals-per-epoch", "1", "--batch-size", "4"]
    command += ["--lr", "3e-4", "--max-length", "64", "--warmup", "0"]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 90
        while not card.is_file():  # the first validated checkpoint: training is under way
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "(interrupted," in stdout
    saved = json.loads(card.read_text())
    assert saved["stopped"] == "interrupted" and saved["steps"] >= 1
    assert saved["base_model"]["fingerprint"] == locate(str(tiny_reranker_dir)).fingerprint
    batch = CrossEncoderReranker(str(out)).rerank("water heat", ["water and heat", "bike chain"])
    assert len(batch.scores) == 2


def test_a_new_head_learns_at_its_own_rate():
    encoder = bundled_model_path()
    assert encoder is not None
    model = CrossEncoder.load(encoder, max_length=48)
    assert model.new_keys == {"classifier.weight", "classifier.bias"}
    optimizer, _ = _optimizer(model, FinetuneConfig(lr=4e-5, head_lr=2e-3), total=10)
    rate = {
        name: group["initial_lr"]
        for group in optimizer.param_groups
        for name, param in model.model.named_parameters()
        if any(param is p for p in group["params"])
    }
    assert rate["classifier.weight"] == rate["classifier.bias"] == 2e-3
    assert {rate[n] for n in rate if not n.startswith("classifier.")} == {4e-5}
    # 0 (the default) keeps the head at the encoder's rate.
    optimizer, _ = _optimizer(model, FinetuneConfig(lr=4e-5), total=10)
    assert {g["initial_lr"] for g in optimizer.param_groups} == {4e-5}
