"""Which languages an embedder serves: the setting, the card, the name, the architecture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from search.config import Settings
from search.embed import TransformerEmbedder
from search.embed_languages import EmbedLanguages, resolve_languages
from search.errors import ConfigError, ModelIncompatible, ModelNotFound
from search.models import BUNDLED_MODEL_ID, MODEL_CARD, LocatedModel, locate

pytestmark = pytest.mark.unit


def model(root: Path, name: str = "m", card: object = None, **config: object) -> LocatedModel:
    """A located model folder holding config.json (and a card when given); no weights."""
    folder = root / name.split("/")[-1]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", **config}))
    if card is not None:
        (folder / MODEL_CARD).write_text(json.dumps(card))
    return LocatedModel(name, folder, "path")


def test_an_english_model_that_names_nothing_serves_latin_only(tmp_path: Path) -> None:
    found = resolve_languages((), model(tmp_path, "acme/english-encoder"))
    assert found == EmbedLanguages(("en",), "default")
    assert found.serves("latin") and found.serves("other") and not found.serves("cjk")
    assert "SIEVE_EMBED_LANGUAGES" in found.explain()


def test_the_bundled_minilm_stays_english() -> None:
    found = resolve_languages((), locate(BUNDLED_MODEL_ID))
    assert found.source == "default" and not found.serves("cjk")


@pytest.mark.parametrize(
    "name",
    [
        "BAAI/bge-m3",
        "intfloat/multilingual-e5-small",
        "intfloat/multilingual-e5-large-instruct",
        "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2",
        "sentence-transformers/LaBSE",
        "/srv/models/multilingual-e5-base",
    ],
)
def test_well_known_multilingual_models_serve_any_language(tmp_path: Path, name: str) -> None:
    # model_type bert: the name alone tells (multilingual-e5-small is a BERT).
    found = resolve_languages((), model(tmp_path, name))
    assert found == EmbedLanguages(("*",), "known model") and found.serves("cjk")


def test_the_saved_name_in_config_counts_for_a_renamed_folder(tmp_path: Path) -> None:
    located = model(tmp_path, "/srv/models/e5", _name_or_path="intfloat/multilingual-e5-small")
    assert resolve_languages((), located).source == "known model"


def test_a_chinese_model_serves_cjk(tmp_path: Path) -> None:
    found = resolve_languages((), model(tmp_path, "BAAI/bge-small-zh-v1.5"))
    assert found.source == "known model" and found.serves("cjk")


def test_an_xlm_roberta_encoder_is_multilingual(tmp_path: Path) -> None:
    found = resolve_languages((), model(tmp_path, "acme/encoder", model_type="xlm-roberta"))
    assert found == EmbedLanguages(("*",), "architecture")


def test_the_card_wins_over_name_and_architecture(tmp_path: Path) -> None:
    located = model(tmp_path, "BAAI/bge-m3", card={"languages": ["en"]}, model_type="xlm-roberta")
    found = resolve_languages((), located)
    assert found == EmbedLanguages(("en",), "card") and not found.serves("cjk")
    zh = resolve_languages((), model(tmp_path / "b", "tuned", card={"languages": ["zh-Hant"]}))
    assert zh.languages == ("zh-hant",) and zh.serves("cjk")


def test_a_card_without_languages_is_passed_over(tmp_path: Path) -> None:
    located = model(tmp_path, "tuned", card={"base_model": "x"}, model_type="xlm-roberta")
    assert resolve_languages((), located).source == "architecture"


@pytest.mark.parametrize("languages", ["en,zh", ["english!"]])
def test_a_malformed_card_fails_naming_the_file(tmp_path: Path, languages: object) -> None:
    with pytest.raises((ModelIncompatible, ConfigError), match=MODEL_CARD):
        resolve_languages((), model(tmp_path, "tuned", card={"languages": languages}))


def test_the_setting_overrides_everything_either_way(tmp_path: Path) -> None:
    multilingual = model(tmp_path, "BAAI/bge-m3", card={"languages": ["*"]})
    found = resolve_languages(("en",), multilingual)
    assert found == EmbedLanguages(("en",), "setting") and not found.serves("cjk")
    english = resolve_languages(("*",), model(tmp_path / "b", "acme/english-encoder"))
    assert english == EmbedLanguages(("*",), "setting") and english.serves("cjk")


def test_settings_read_the_languages_and_reject_nonsense() -> None:
    assert Settings.from_env({}).embed_languages == ()
    assert Settings.from_env({"SIEVE_EMBED_LANGUAGES": "en, zh"}).embed_languages == ("en", "zh")
    with pytest.raises(ConfigError, match="SIEVE_EMBED_LANGUAGES"):
        Settings.from_env({"SIEVE_EMBED_LANGUAGES": "en,chinese!"})


def test_the_embedder_reads_the_folder_only_when_nothing_is_set(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")
    # Set languages need no model folder: nothing is located, nothing fails.
    assert TransformerEmbedder(missing, languages=("zh",)).serves("cjk")
    with pytest.raises(ModelNotFound):
        TransformerEmbedder(missing).serves("cjk")
    folder = model(tmp_path, "enc", model_type="xlm-roberta").folder
    embedder = TransformerEmbedder(str(folder))
    assert embedder.languages == ("*",) and "architecture" in embedder.explain_languages()
