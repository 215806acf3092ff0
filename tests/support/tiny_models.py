"""Tiny, randomly initialised models built on the spot, so no test downloads weights.

``build_tiny_encoder`` writes an ``XLMRobertaModel`` for the embedder, with the
same locally trained tokenizer.

``build_tiny_reranker`` writes an ``XLMRobertaForSequenceClassification`` with one
label (the shape of BAAI/bge-reranker-v2-m3, only smaller) and a tokenizer trained
here with the ``tokenizers`` library. Both are saved with ``save_pretrained`` so that
``AutoTokenizer`` / ``AutoModelForSequenceClassification.from_pretrained(folder)``
load them through exactly the code path the real model takes. The benchmark builds
its large random model with the same function.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tokenizers import Tokenizer

SAMPLE_CORPUS = Path(__file__).resolve().parents[2] / "sample" / "corpus.jsonl"

# XLM-R's special tokens and ids: <s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=last.
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
MASK = "<mask>"

_EN_WORDS = (
    "the a of to and in is for on with that by as it from at this be are or was an can "
    "water heat cook rice pan skillet knife garden soil plant tomato compost bike tyre chain "
    "brake pressure burn sting nosebleed first aid password account router printer storm "
    "lightning flood heat wave travel card fee jet lag fund emergency safety keep dry clean "
    "store cool warm slowly quickly never always before after minutes hours days model "
    "search query passage rank score relevant document index vector keyword cell protein "
    "gene patient study results increased decreased risk treatment clinical effect"
).split()
_ZH_CHARS = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说"
    "产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点"
    "从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原"
    "茶叶保存蚊虫叮咬路由器重启台风地震手机电饭锅浴室霉菌自行车刹车心肺复苏应急基金阳台香草"
)


def training_lines(seed: int = 0, n_generated: int = 400) -> Iterator[str]:
    """A few hundred lines of English and Chinese: the sample corpus plus generated text."""
    if SAMPLE_CORPUS.exists():
        for line in SAMPLE_CORPUS.read_text(encoding="utf-8").splitlines():
            if line.strip():
                doc = json.loads(line)
                yield doc.get("title", "")
                yield doc.get("text", "")
    rng = random.Random(seed)
    for i in range(n_generated):
        if i % 3 == 2:
            yield "".join(rng.choice(_ZH_CHARS) for _ in range(rng.randint(8, 40))) + "。"
        else:
            words = [rng.choice(_EN_WORDS) for _ in range(rng.randint(6, 24))]
            yield " ".join(words).capitalize() + "."


def train_tokenizer(lines: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a SentencePiece-style Unigram tokenizer laid out like XLM-R's.

    No normaliser: transformers rebuilds an
    ``XLMRobertaTokenizer`` from the vocabulary on load and keeps only a
    ``Precompiled`` normaliser, so any other one would be lost on the way back.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    pre = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁")]
    )
    draft = Tokenizer(models.Unigram())
    draft.pre_tokenizer = pre
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size - 1,  # <mask> is appended last, as in XLM-R
        special_tokens=SPECIALS,
        unk_token="<unk>",
        show_progress=False,
    )
    draft.train_from_iterator(lines, trainer=trainer)
    vocab = [(piece, score) for piece, score in json.loads(draft.to_str())["model"]["vocab"]]
    assert [piece for piece, _ in vocab[:4]] == SPECIALS, vocab[:4]
    vocab.append((MASK, 0.0))

    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tokenizer.pre_tokenizer = pre
    tokenizer.decoder = decoders.Metaspace(replacement="▁")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return tokenizer


def build_tiny_reranker(
    path: Path,
    *,
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate: int = 64,
    max_position: int = 514,
    vocab_size: int = 1500,
    model_vocab_size: int | None = None,
    init_range: float = 0.2,
    texts: Iterable[str] | None = None,
) -> Path:
    """Write a random one-label XLM-R classifier and a locally trained tokenizer to ``path``.

    ``vocab_size`` is the trained tokenizer's; ``model_vocab_size`` (default: the
    same) may be larger, e.g. 250002 to give a benchmark model XLM-R's embedding
    table. ``init_range`` is the weights' standard deviation; XLM-R's own 0.02
    makes a small random model give nearly the same logit to every input, which
    would leave tests that compare orders, windows or precisions nothing to see.
    ``texts`` replaces the default training lines (the benchmark trains on its
    own corpus so that token counts come closer to real ones).
    """
    import torch
    import transformers
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    # transformers 4 has a SentencePiece XLMRobertaTokenizer and a tokenizers-backed
    # XLMRobertaTokenizerFast; in 5 the first is tokenizers-backed and the second an alias.
    fast_class = getattr(transformers, "XLMRobertaTokenizerFast", transformers.XLMRobertaTokenizer)

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    backend = train_tokenizer(training_lines(seed) if texts is None else texts, vocab_size)
    tokenizer = fast_class(tokenizer_object=backend, model_max_length=max_position - 2)
    tokenizer.save_pretrained(path)

    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=model_vocab_size or len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_position,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        initializer_range=init_range,
    )
    config.num_labels = 1  # one logit: the relevance score
    model = XLMRobertaForSequenceClassification(config).eval()
    model.save_pretrained(path)
    return path


def build_tiny_encoder(
    path: Path,
    *,
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    vocab_size: int = 1500,
) -> Path:
    """Write a random ``XLMRobertaModel`` (the encoder of bge-m3 and multilingual-e5,
    only smaller) and a tokenizer trained here on English and Chinese to ``path``.

    It loads through ``AutoModel`` exactly as those embedders do. No model card is
    written: what languages it serves is left to ``search.embed_languages``.
    """
    import torch
    import transformers
    from transformers import XLMRobertaConfig, XLMRobertaModel

    fast_class = getattr(transformers, "XLMRobertaTokenizerFast", transformers.XLMRobertaTokenizer)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = fast_class(
        tokenizer_object=train_tokenizer(training_lines(seed), vocab_size), model_max_length=512
    )
    tokenizer.save_pretrained(path)
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        initializer_range=0.2,
    )
    XLMRobertaModel(config).eval().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a random multilingual (XLM-R) encoder, built once."""
    return build_tiny_encoder(tmp_path_factory.mktemp("models") / "tiny-multilingual-encoder")


@pytest.fixture(scope="session")
def tiny_reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models/ folder holding ``tiny-reranker`` (a random XLM-R classifier), built once."""
    models_dir = tmp_path_factory.mktemp("models")
    build_tiny_reranker(models_dir / "tiny-reranker")
    return models_dir / "tiny-reranker"
