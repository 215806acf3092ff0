"""``sieve serve --pull-default-reranker`` (what ``make run`` runs): pull when the hub
answers, one line and serve on when it does not. The hub is ``support.hub_server``."""

from __future__ import annotations

import time

import huggingface_hub.constants
import pytest
from support.hub_server import HubServer
from support.live_server import free_port, sieve_serve

from api.cli.serve import pull_default_reranker
from api.settings import ServiceSettings
from search.models import DEFAULT_RERANKER_CPU, locate
from search.rerank.status import describe_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def config(tmp_path) -> ServiceSettings:
    env = {"SIEVE_DATA_DIR": str(tmp_path / "data"), "SIEVE_RERANK_DEVICE": "cpu"}
    env["SIEVE_RERANK_MODELS_DIR"] = str(tmp_path / "models")
    return ServiceSettings.from_env(env)


def test_pulls_the_cpu_default_and_serves_it(config, tiny_reranker_dir, monkeypatch, capsys):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    hub = HubServer({DEFAULT_RERANKER_CPU: tiny_reranker_dir}).start()
    try:
        served = pull_default_reranker(config, cuda=False, endpoint=hub.endpoint)
    finally:
        hub.stop()
    models = config.engine.rerank_models_dir
    assert served.engine.rerank_model == DEFAULT_RERANKER_CPU  # the unset default is replaced
    assert (models / DEFAULT_RERANKER_CPU / "config.json").is_file()
    assert capsys.readouterr().out.strip().endswith(f"into {models / DEFAULT_RERANKER_CPU}")
    status = describe_settings(served.engine, cuda=False)
    fingerprint = locate(DEFAULT_RERANKER_CPU, models).fingerprint
    assert status.active and status.fingerprint == fingerprint and status.device == "cpu"
    # Once it is there, nothing is pulled and nothing printed.
    assert pull_default_reranker(served, cuda=False, endpoint="http://127.0.0.1:9") == served
    assert capsys.readouterr().out == ""


def test_an_unreachable_hub_is_one_line_and_no_reranker(config, monkeypatch, capsys):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    hub = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    assert pull_default_reranker(config, cuda=False, endpoint=hub) == config
    assert time.monotonic() - started < 5
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"not pulling the default reranker {DEFAULT_RERANKER_CPU}: the hub {hub} is not reachable"
    )
    assert not describe_settings(config.engine, cuda=False).active


def test_serve_without_network_says_so_in_one_line_and_serves(tmp_path):
    env = {
        "SIEVE_DATA_DIR": str(tmp_path / "data"),
        "SIEVE_RERANK_MODELS_DIR": str(tmp_path / "models"),
        "SIEVE_RERANK_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",
    }
    with sieve_serve(env, "--pull-default-reranker") as served:
        assert served.wait_for("/healthz")[0] == 200
    output = served.output
    pulled = [line for line in output.splitlines() if "default reranker" in line]
    assert len(pulled) == 1 and "is not reachable" in pulled[0], output
    banner = [line for line in output.splitlines() if line.startswith("reranker: ")]
    assert banner == [
        "reranker: none: the reranker model 'BAAI/bge-reranker-v2-m3' is not on this machine "
        f"(models folder {tmp_path / 'models'}, SIEVE_RERANK_MODELS_DIR). Fix: sieve models pull "
        f"{DEFAULT_RERANKER_CPU}, then set SIEVE_RERANK_MODEL={DEFAULT_RERANKER_CPU}"
    ], output
