"""Which languages an embedding model serves: the setting, else what its folder tells.

A query in a script the embedder was not trained on gets a vector near nothing
in particular, and fused in, it adds noise to BM25's answer: the pipeline skips
the vector leg for such a query and says why. Whether a model serves a script
is decided here, by the first of these rules that answers:

1. ``setting``: ``SIEVE_EMBED_LANGUAGES`` when it is set ("en", "zh", ... or
   ``*`` for any). It always wins, either way.
2. ``card``: the ``languages`` of the Sieve model card (``sieve-model.json``)
   in the model folder; ``sieve finetune`` writes it.
3. ``known model``: a well-known multilingual (or Chinese) model by name: the
   id asked for, the folder's name or the ``_name_or_path`` its ``config.json``
   was saved with (``KNOWN_MODELS``: BAAI/bge-m3, intfloat/multilingual-e5-*,
   sentence-transformers/paraphrase-multilingual-*, ...).
4. ``architecture``: ``config.json``'s ``model_type`` is one whose pretraining
   covers CJK (``MULTILINGUAL_ARCHITECTURES``: XLM-RoBERTa, the base of bge-m3
   and multilingual-e5-base/large). An English-only fine-tune of one is told by
   setting ``SIEVE_EMBED_LANGUAGES=en``.
5. ``default``: English, as for the bundled all-MiniLM-L6-v2.

The tokenizer's vocabulary is deliberately not a rule: BERT's English
vocabulary (MiniLM's) holds thousands of CJK characters that the model never
learned to embed.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from search.errors import ConfigError, ModelIncompatible
from search.model_folders import read_card
from search.models import MODEL_CARD, LocatedModel

Source = Literal["setting", "card", "known model", "architecture", "default"]
ANY = "*"
DEFAULT_LANGUAGES: tuple[str, ...] = ("en",)
# The languages whose queries script_of calls "cjk".
CJK_LANGUAGES = frozenset({"zh", "ja", "ko"})
# A language code: "en", "zh", "zh-hant", "pt-br" (compared lowercased).
_CODE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")

# Glob patterns over a model's name (its last path part, lowercased) -> languages.
KNOWN_MODELS: dict[str, tuple[str, ...]] = {
    "bge-m3*": (ANY,),
    "multilingual-e5-*": (ANY,),
    "paraphrase-multilingual-*": (ANY,),
    "distiluse-base-multilingual-*": (ANY,),
    "labse": (ANY,),
    "bge-*-zh*": ("zh", "en"),
    "text2vec-*-chinese*": ("zh",),
}
# config.json model_type values of encoders pretrained on CJK among other languages.
MULTILINGUAL_ARCHITECTURES = frozenset({"xlm-roberta"})

_EXPLAINED: dict[Source, str] = {
    "setting": "set by SIEVE_EMBED_LANGUAGES",
    "card": f"from the model card ({MODEL_CARD})",
    "known model": "a known model",
    "architecture": "from the model's architecture",
    "default": "the default for a model that names no languages; use a multilingual "
    "model or set SIEVE_EMBED_LANGUAGES",
}


@dataclass(frozen=True)
class EmbedLanguages:
    """The languages a model serves (``*``: any) and which rule said so."""

    languages: tuple[str, ...]
    source: Source

    def serves(self, script: str) -> bool:
        """Whether queries in ``script`` (``search.text.script_of``) make sense for the model.

        Only CJK is ever refused: "latin" stands for every other script, and an
        English model still embeds names and numbers in them usefully.
        """
        if ANY in self.languages or script != "cjk":
            return True
        return bool(CJK_LANGUAGES & {code.split("-")[0] for code in self.languages})

    def explain(self) -> str:
        """The languages and where they came from, for a skipped leg's reason."""
        return f"languages: {', '.join(self.languages)}, {_EXPLAINED[self.source]}"


def check_languages(codes: Sequence[str], where: str = "SIEVE_EMBED_LANGUAGES") -> tuple[str, ...]:
    """``codes`` lowercased, each ``*`` or a language code; ``ConfigError`` naming ``where``."""
    out = tuple(str(code).strip().lower() for code in codes)
    bad = [code for code in out if code != ANY and not _CODE.match(code)]
    if bad:
        raise ConfigError(
            f"{where} holds {', '.join(map(repr, bad))}: use language codes such as en, zh, "
            "ja, or * for any language",
            value=list(codes),
        )
    return out


def known_languages(name: str) -> tuple[str, ...] | None:
    """The languages of a well-known model ``name`` (an id or a folder), else None."""
    last = name.replace("\\", "/").rstrip("/").split("/")[-1].lower()
    for pattern, languages in KNOWN_MODELS.items():
        if fnmatch.fnmatchcase(last, pattern):
            return languages
    return None


def resolve_languages(setting: Sequence[str], model: LocatedModel | None) -> EmbedLanguages:
    """The languages of the embedder (rules in the module docstring).

    ``setting`` is ``SIEVE_EMBED_LANGUAGES`` (empty: unset). ``model`` may be
    None only when the setting is given: nothing else is read then.
    """
    if setting:
        return EmbedLanguages(check_languages(setting), "setting")
    if model is None:
        raise ValueError("resolve_languages needs the model when no languages are set")
    card = read_card(model.folder)
    if card.get("languages"):
        listed = card["languages"]
        if not isinstance(listed, list):
            raise ModelIncompatible(
                f"{model.folder / MODEL_CARD}: languages must be a list such as "
                f'["en", "zh"], not {listed!r}',
                model=model.name,
            )
        return EmbedLanguages(check_languages(listed, str(model.folder / MODEL_CARD)), "card")
    config = model.config()
    for name in (model.name, model.folder.name, str(config.get("_name_or_path") or "")):
        known = known_languages(name) if name else None
        if known is not None:
            return EmbedLanguages(known, "known model")
    if config.get("model_type") in MULTILINGUAL_ARCHITECTURES:
        return EmbedLanguages((ANY,), "architecture")
    return EmbedLanguages(DEFAULT_LANGUAGES, "default")
