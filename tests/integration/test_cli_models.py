"""``sieve models`` and ``sieve models pull`` against a local stand-in for the hub."""

from __future__ import annotations

import json
import shutil

import huggingface_hub.constants
import pytest
from click.testing import CliRunner
from support.hub_server import hub_server  # noqa: F401

from api.cli import main
from search.models import CALIBRATION_FILE, DEFAULT_RERANKER_CPU, MODEL_CARD, locate
from search.rerank import CrossEncoderReranker

pytestmark = pytest.mark.integration


@pytest.fixture
def models_dir(tmp_path):
    return tmp_path / "models"


@pytest.fixture
def env(tmp_path, models_dir):
    return {
        "SIEVE_DATA_DIR": str(tmp_path / "data"),
        "SIEVE_RERANK_MODELS_DIR": str(models_dir),
        "SIEVE_RERANK_DEVICE": "cpu",
        "HF_ENDPOINT": None,  # only --endpoint points at a hub, and only the local one
    }


@pytest.fixture
def online(monkeypatch):
    """The test session runs with HF_HUB_OFFLINE=1; pulls go to the local server only."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def test_lists_models_in_use_and_folders_with_their_cards(env, models_dir, tiny_reranker_dir):
    folder = models_dir / "tuned"
    shutil.copytree(tiny_reranker_dir, folder)
    card = {"languages": ["en", "zh"], "metrics": {"validation": {"after": {"ndcg@10": 0.5}}}}
    (folder / MODEL_CARD).write_text(json.dumps(card))
    (folder / CALIBRATION_FILE).write_text("{}")
    shutil.copytree(tiny_reranker_dir, models_dir / "acme" / "plain")
    env = {**env, "SIEVE_RERANK_MODEL": "tuned"}
    run = CliRunner().invoke(main, ["models", "--json"], env=env)
    assert run.exit_code == 0, run.output
    listing = json.loads(run.stdout)
    embedder, reranker = listing["in_use"]
    assert embedder["role"] == "embedder" and embedder["found_in"] == "bundled"
    assert reranker["found_in"] == "models_dir" and reranker["folder"] == str(folder)
    assert reranker["fingerprint"] == locate(str(folder)).fingerprint
    by_name = {m["name"]: m for m in listing["models"]}
    assert set(by_name) == {"tuned", "acme/plain"}
    tuned = by_name["tuned"]
    assert tuned["languages"] == ["en", "zh"] and tuned["metrics"] == {"ndcg@10": 0.5}
    assert tuned["calibrated"] and not by_name["acme/plain"]["calibrated"]
    assert tuned["size_bytes"] > 0 and tuned["fingerprint"] == reranker["fingerprint"]
    text = CliRunner().invoke(main, ["models"], env=env).stdout
    assert "tuned" in text and "calibration yes" in text and "ndcg@10 0.5000" in text


def test_pull_downloads_a_model_into_the_models_folder(env, models_dir, hub_server, online):  # noqa: F811
    run = CliRunner().invoke(
        main, ["models", "pull", "acme/tiny-reranker", "--endpoint", hub_server.endpoint], env=env
    )
    assert run.exit_code == 0, run.output
    folder = models_dir / "acme" / "tiny-reranker"
    assert (folder / "config.json").is_file() and not (folder / ".cache").exists()
    assert not any((models_dir / ".pull").rglob("config.json"))  # nothing half-pulled left
    assert any(r.startswith("GET /acme/tiny-reranker/resolve/") for r in hub_server.requests)
    # Found by its id through the models folder, as SIEVE_RERANK_MODEL would name it.
    reranker = CrossEncoderReranker("acme/tiny-reranker", models_dir=models_dir)
    assert len(reranker.rerank("q", ["a", "b"]).scores) == 2
    listed = CliRunner().invoke(main, ["models"], env=env).stdout
    assert "acme/tiny-reranker" in listed


def test_pull_without_a_name_asks_for_the_default_of_the_device(env, hub_server, online):  # noqa: F811
    run = CliRunner().invoke(main, ["models", "pull", "--endpoint", hub_server.endpoint], env=env)
    # The local hub has no such model: one line, exit 2, and the request names the default.
    assert run.exit_code == 2 and run.stderr.startswith("error: could not download")
    assert len(run.stderr.strip().splitlines()) == 1
    assert f"GET /api/models/{DEFAULT_RERANKER_CPU}/revision/main" in hub_server.requests
