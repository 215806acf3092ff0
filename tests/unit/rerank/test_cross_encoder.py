"""CrossEncoderReranker on a tiny random XLM-R classifier, loaded through the real code path."""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from support.tiny_models import build_tiny_reranker, train_tokenizer, training_lines

from search.config import Settings
from search.errors import (
    BackendUnavailable,
    ConfigError,
    InvalidRequest,
    ModelIncompatible,
    ModelNotFound,
)
from search.rerank import CrossEncoderReranker, Reranker
from search.types import RerankBatch

pytestmark = pytest.mark.unit

QUERY = "how do I cook rice on the stove"
PASSAGES = [
    "Rinse the rice, add water, bring it to a boil, then simmer covered for fifteen minutes.",
    "Keep the bike chain clean and lubricated.",
    "茶叶应密封保存，放在阴凉干燥的地方。",
    "",
    "Let the skillet cool, rinse it under hot water and dry it over low heat.",
    "Lightning: get indoors and stay away from windows.",
]
REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "sample" / "corpus.jsonl"


def long_text() -> str:
    """Several different English documents in a row: far longer than a 64-token window."""
    docs = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    return " ".join(d["text"] for d in docs if d["_id"].startswith("en-"))[:3000]


def make(tiny_reranker_dir: Path, **kwargs) -> CrossEncoderReranker:
    kwargs.setdefault("max_length", 64)
    # The torch path: what these tests look into (dtype, OOM splitting); ONNX Runtime
    # is tests/integration/test_onnx_rerank.py's.
    kwargs.setdefault("runtime", "torch")
    return CrossEncoderReranker("tiny-reranker", models_dir=tiny_reranker_dir.parent, **kwargs)


def logits(batch: RerankBatch) -> list[float]:
    return [s.logit for s in batch.scores]


@pytest.fixture(scope="module")
def reranker(tiny_reranker_dir: Path) -> CrossEncoderReranker:
    return make(tiny_reranker_dir)


def test_tiny_tokenizer_loads_back_with_its_trained_vocabulary(tiny_reranker_dir):
    from transformers import AutoTokenizer

    trained = train_tokenizer(training_lines(0), 1500)
    loaded = AutoTokenizer.from_pretrained(tiny_reranker_dir)
    assert loaded.is_fast
    assert len(loaded) == trained.get_vocab_size() == 1500
    assert [loaded.convert_ids_to_tokens(i) for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert loaded.mask_token_id == 1499
    text = "Rinse the rice 茶叶保存"
    assert (
        loaded(text, add_special_tokens=False)["input_ids"]
        == trained.encode(text, add_special_tokens=False).ids
    )
    pair = loaded("a b", "c")["input_ids"]
    assert pair[0] == 0 and pair[-1] == 2 and pair.count(2) == 3  # <s> A </s></s> B </s>


def test_construction_is_cheap_and_loads_nothing():
    reranker = CrossEncoderReranker("no/such-model", models_dir=Path("/nonexistent"))
    assert reranker._model is None and reranker._tokenizer is None
    assert isinstance(reranker, Reranker)


def test_import_and_construction_import_neither_torch_nor_transformers():
    # Only a fresh interpreter can show what an import pulls in; this one has
    # torch loaded already.
    code = (
        "import sys; from search.rerank import CrossEncoderReranker as C; C(); C().model_key; "
        "print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"


def test_loads_from_models_dir_and_scores(reranker):
    batch = reranker.rerank(QUERY, PASSAGES)
    assert reranker._model is not None
    assert len(batch.scores) == len(PASSAGES)
    assert batch.timings_ms["model"] > 0
    assert all(math.isfinite(s.logit) for s in batch.scores)
    assert len(set(logits(batch))) > 1  # the model does tell passages apart


@pytest.mark.parametrize(
    "model, where",
    [
        ("BAAI/tiny-reranker", "parent"),  # models_dir / last part of the id
        ("tiny-reranker", "parent"),  # models_dir / id
        ("BAAI/bge-reranker-v2-m3", "self"),  # models_dir itself holds config.json
        ("explicit", "path"),  # an existing folder given as the model
    ],
)
def test_resolution_finds_the_same_model(tiny_reranker_dir, reranker, model, where):
    if where == "path":
        other = CrossEncoderReranker(str(tiny_reranker_dir), max_length=64, runtime="torch")
    else:
        models_dir = tiny_reranker_dir.parent if where == "parent" else tiny_reranker_dir
        other = CrossEncoderReranker(model, models_dir=models_dir, max_length=64, runtime="torch")
    assert logits(other.rerank(QUERY, PASSAGES)) == logits(reranker.rerank(QUERY, PASSAGES))


def test_scores_are_deterministic_across_instances(tiny_reranker_dir, reranker):
    again = make(tiny_reranker_dir)
    assert logits(again.rerank(QUERY, PASSAGES)) == logits(reranker.rerank(QUERY, PASSAGES))


def test_order_is_restored(reranker):
    base = dict(zip(PASSAGES, logits(reranker.rerank(QUERY, PASSAGES)), strict=True))
    shuffled = PASSAGES[:]
    random.Random(7).shuffle(shuffled)
    got = logits(reranker.rerank(QUERY, shuffled))
    assert got == pytest.approx([base[p] for p in shuffled], abs=1e-5)


def test_small_token_budget_gives_the_same_logits(tiny_reranker_dir, reranker):
    passages = [*PASSAGES, long_text()]
    one_batch = make(tiny_reranker_dir, token_budget=1_000_000)
    tiny_batches = make(tiny_reranker_dir, token_budget=64)  # max_length: 64
    calls: list[tuple[int, int]] = []
    forward = tiny_batches._forward
    tiny_batches._forward = lambda pairs: (
        calls.append((len(pairs), max(len(p.ids) for p in pairs))) or forward(pairs)
    )
    expected = logits(one_batch.rerank(QUERY, passages))
    assert logits(tiny_batches.rerank(QUERY, passages)) == pytest.approx(expected, abs=1e-5)
    assert all(count * width <= 64 for count, width in calls)
    assert any(count > 1 for count, _ in calls)  # short pairs still share a pass
    widths = [width for _, width in calls]
    assert widths == sorted(widths, reverse=True)  # longest first


def test_score_is_the_sigmoid_of_the_logit(reranker):
    for s in reranker.rerank(QUERY, PASSAGES).scores:
        assert s.score == pytest.approx(1 / (1 + math.exp(-s.logit)), rel=1e-12)


def test_short_passages_span_the_whole_text(reranker):
    batch = reranker.rerank(QUERY, PASSAGES)
    assert [(s.start, s.end) for s in batch.scores] == [(0, len(p)) for p in PASSAGES]


def test_long_passage_is_scored_by_its_best_window(reranker):
    text = long_text()
    score = reranker.rerank(QUERY, [text]).scores[0]
    pairs = reranker._encode(QUERY, [text])
    window_logits = reranker._score(pairs)
    assert len(pairs) > 3 and all(len(p.ids) <= 64 for p in pairs)
    best = max(range(len(pairs)), key=window_logits.__getitem__)
    assert score.logit == pytest.approx(window_logits[best], abs=1e-6)
    assert (score.start, score.end) == (pairs[best].start, pairs[best].end)
    assert 0 <= score.start < score.end <= len(text) and (score.start, score.end) != (0, len(text))
    # The offsets point at the text that earned the score: windows are cut at
    # word boundaries, so that substring scored alone gives the same logit.
    snippet = text[score.start : score.end]
    assert snippet == snippet.strip() and snippet in text
    alone = reranker.rerank(QUERY, [snippet]).scores[0]
    assert alone.logit == pytest.approx(score.logit, abs=1e-5)
    assert (alone.start, alone.end) == (0, len(snippet))  # it fits one window


def test_windows_overlap_and_cover_the_passage(reranker):
    text = long_text()
    pairs = reranker._encode(QUERY, [text])
    assert pairs[0].start == 0 and pairs[-1].end == len(text.rstrip())
    for before, after in zip(pairs, pairs[1:], strict=False):
        assert after.start < before.end  # a quarter of each window is shared


def test_long_query_is_truncated_to_its_share(tiny_reranker_dir):
    reranker = make(tiny_reranker_dir)  # max_length 64, query_share 0.25
    query = " ".join(random.Random(1).choice(["rice", "water", "heat", "pan"]) for _ in range(1000))
    widths: list[int] = []
    forward = reranker._forward
    reranker._forward = lambda pairs: widths.extend(len(p.ids) for p in pairs) or forward(pairs)
    batch = reranker.rerank(query, [*PASSAGES, long_text()])
    assert len(batch.scores) == len(PASSAGES) + 1 and all(math.isfinite(x) for x in logits(batch))
    assert widths and max(widths) <= 64
    pair = reranker._encode(query, ["Rinse the rice."])[0]
    # <s> query(16 = 0.25 * 64) </s></s> passage </s>: the query kept its share, no more.
    assert pair.ids.index(2) - 1 == 16


def test_a_greedy_query_share_still_leaves_the_passage_room(tiny_reranker_dir):
    reranker = make(tiny_reranker_dir, max_length=16, query_share=0.9)
    reranker.warm_up()
    pairs = reranker._encode("rice " * 50, [long_text()])
    assert all(len(p.ids) <= 16 for p in pairs)
    # The query keeps 4 tokens, not 0.9 * 16: 16 - 4 special - 8 minimum passage room.
    assert {p.ids.index(2) - 1 for p in pairs} == {4}
    assert max(len(p.ids) for p in pairs) - 4 - 4 == 8


def test_empty_list_returns_nothing_and_loads_nothing():
    reranker = CrossEncoderReranker("no/such-model", models_dir=Path("/nonexistent"))
    assert reranker.rerank("anything", []) == RerankBatch([])
    assert reranker._model is None


def test_passages_must_be_a_list_of_strings(reranker):
    with pytest.raises(InvalidRequest):
        reranker.rerank(QUERY, "a single string")  # type: ignore[arg-type]


def test_model_key_reads_files_but_loads_nothing(tiny_reranker_dir, tmp_path):
    fresh = make(tiny_reranker_dir)
    key = fresh.model_key
    assert fresh._model is None
    assert key.startswith("tiny-reranker@") and key.endswith(":64")
    assert make(tiny_reranker_dir, revision="abc123").model_key == "tiny-reranker@abc123:64"
    assert make(tiny_reranker_dir, max_length=128).model_key != key
    # Same files elsewhere: same key. Other weights of the same shape (so same
    # sizes) under the same name: a different key.
    copy = tmp_path / "copy"
    shutil.copytree(tiny_reranker_dir, copy / "tiny-reranker")
    assert CrossEncoderReranker("tiny-reranker", models_dir=copy, max_length=64).model_key == key
    build_tiny_reranker(tmp_path / "other" / "tiny-reranker", seed=1)
    other = CrossEncoderReranker("tiny-reranker", models_dir=tmp_path / "other", max_length=64)
    assert other.model_key != key


def test_commit_hash_in_config_is_the_revision(tiny_reranker_dir, tmp_path):
    folder = tmp_path / "tiny-reranker"
    shutil.copytree(tiny_reranker_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "_commit_hash": "deadbeef"}))
    assert CrossEncoderReranker(str(folder), max_length=64).model_key.endswith("@deadbeef:64")


def test_unset_max_length_follows_the_fine_tuned_card_and_the_setting_wins(
    tiny_reranker_dir, tmp_path
):
    folder = tmp_path / "tiny-reranker"
    shutil.copytree(tiny_reranker_dir, folder)
    (folder / "sieve-model.json").write_text(json.dumps({"hyperparameters": {"max_length": 96}}))
    served = CrossEncoderReranker(str(folder), runtime="torch")
    assert served.max_length == 96 and served.model_key.endswith(":96")
    pairs = served.rerank("kettle", ["descale " * 300]).scores
    assert pairs[0].end > 0 and served._pairs is not None and served._pairs.max_length == 96
    assert CrossEncoderReranker(str(folder), max_length=64).max_length == 64
    # No card: the 512 default; a model not found yet gets it without keeping it.
    assert CrossEncoderReranker(str(tiny_reranker_dir)).max_length == 512
    later = tmp_path / "later"
    missing = CrossEncoderReranker(str(later))
    assert missing.max_length == 512
    shutil.copytree(folder, later)
    assert missing.max_length == 96


def test_missing_model_names_the_paths_and_the_id(tmp_path):
    reranker = CrossEncoderReranker("acme/missing-reranker", models_dir=tmp_path / "models")
    with pytest.raises(ModelNotFound) as info:
        reranker.warm_up()
    message = str(info.value)
    assert "acme/missing-reranker" in message
    assert str(tmp_path / "models" / "acme" / "missing-reranker") in message
    assert str(tmp_path / "models" / "missing-reranker") in message
    assert "Hugging Face cache" in message
    # The key of a model that is not there is a placeholder, not an error
    # (isinstance checks read it); it is not remembered, so a model put in place
    # later gets its real key.
    assert reranker.model_key == "acme/missing-reranker@unresolved:512"
    assert reranker._key is None
    # Through the Reranker contract the same failure reads "unavailable".
    with pytest.raises(BackendUnavailable) as unavailable:
        reranker.rerank("q", ["p"])
    assert isinstance(unavailable.value.__cause__, ModelNotFound)


def test_available_says_whether_the_model_is_here_without_loading(tiny_reranker_dir, tmp_path):
    here = make(tiny_reranker_dir)
    assert here.available() and here._model is None
    missing = CrossEncoderReranker("acme/missing", models_dir=tmp_path, allow_download=True)
    assert not missing.available()  # downloads allowed, but available() never downloads


def edited_copy(source: Path, target: Path, **changes) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, **changes}))
    return target


def test_unknown_model_type_is_incompatible(tiny_reranker_dir, tmp_path):
    folder = edited_copy(tiny_reranker_dir, tmp_path / "m", model_type="sieve-future-arch")
    with pytest.raises(ModelIncompatible) as info:
        CrossEncoderReranker(str(folder)).warm_up()
    assert "sieve-future-arch" in str(info.value) and "transformers" in str(info.value)


def test_model_saved_by_a_newer_major_transformers_is_incompatible(tiny_reranker_dir, tmp_path):
    folder = edited_copy(tiny_reranker_dir, tmp_path / "m", transformers_version="99.0.0")
    with pytest.raises(ModelIncompatible, match=r"transformers >= 99\.0\.0"):
        CrossEncoderReranker(str(folder)).warm_up()


def test_classifier_with_several_labels_is_incompatible(tiny_reranker_dir, tmp_path):
    folder = edited_copy(
        tiny_reranker_dir, tmp_path / "m", id2label={"0": "a", "1": "b"}, label2id={"a": 0, "b": 1}
    )
    with pytest.raises(ModelIncompatible, match="2 labels"):
        CrossEncoderReranker(str(folder)).warm_up()


def test_float16_on_cpu_is_a_config_error(tiny_reranker_dir, monkeypatch):
    with pytest.raises(ConfigError, match="float16"):
        CrossEncoderReranker(device="cpu", dtype="float16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="float16"):
        make(tiny_reranker_dir, dtype="float16").warm_up()


def test_invalid_settings_are_named():
    with pytest.raises(ConfigError, match="device"):
        CrossEncoderReranker(device="tpu")
    with pytest.raises(ConfigError, match="dtype"):
        CrossEncoderReranker(dtype="int8")
    with pytest.raises(ConfigError, match="query_share"):
        CrossEncoderReranker(query_share=1.0)
    with pytest.raises(ConfigError, match="SIEVE_RERANK_RUNTIME must be one of auto, torch"):
        CrossEncoderReranker(runtime="tensorrt")
    with pytest.raises(ConfigError, match="SIEVE_RERANK_RUNTIME=onnx runs on the CPU"):
        CrossEncoderReranker(runtime="onnx", device="cuda")
    with pytest.raises(ConfigError, match="SIEVE_RERANK_RUNTIME=onnx-int8 runs on the CPU"):
        CrossEncoderReranker(runtime="onnx-int8", dtype="bfloat16")
    assert CrossEncoderReranker(runtime="onnx").device == "cpu"  # auto: ONNX Runtime's CPU


def test_bfloat16_on_cpu_is_allowed(tiny_reranker_dir, reranker):
    bf16 = make(tiny_reranker_dir, device="cpu", dtype="bfloat16")
    got = logits(bf16.rerank(QUERY, PASSAGES))
    assert next(bf16._model.parameters()).dtype == torch.bfloat16
    assert got == pytest.approx(logits(reranker.rerank(QUERY, PASSAGES)), abs=0.1)


def test_from_settings_passes_every_rerank_setting(tmp_path):
    settings = Settings(
        rerank_model="acme/r",
        rerank_models_dir=tmp_path,
        rerank_revision="v1",
        rerank_device="cpu",
        rerank_dtype="bfloat16",
        rerank_max_length=256,
        rerank_query_share=0.5,
        rerank_token_budget=4096,
        rerank_runtime="torch",
        onnx_cache=str(tmp_path / "onnx"),
        allow_download=True,
    )
    r = CrossEncoderReranker.from_settings(settings)
    assert (r.runtime_setting, r.onnx_cache) == ("torch", str(tmp_path / "onnx"))
    assert (r.model, r.models_dir, r.revision, r.device, r.dtype) == (
        "acme/r",
        tmp_path,
        "v1",
        "cpu",
        "bfloat16",
    )
    assert (r.max_length, r.query_share, r.token_budget, r.allow_download) == (256, 0.5, 4096, True)
    assert r._model is None


def test_padding_to_multiples_of_eight_only_on_cuda(reranker):
    assert reranker._padded(13) == 13  # CPU: no padding beyond the longest pair
    reranker_cuda = CrossEncoderReranker(max_length=60)
    reranker_cuda._device = "cuda"
    assert [reranker_cuda._padded(n) for n in (1, 8, 13, 57, 60)] == [8, 8, 16, 60, 60]


# A CUDA out-of-memory error cannot be caused on a CPU machine, so these tests
# make the forward pass raise torch.cuda.OutOfMemoryError for batches larger than
# two pairs, as a GPU with too little free memory would.
def test_out_of_memory_splits_the_batch_and_gives_the_same_logits(tiny_reranker_dir):
    passages = [*PASSAGES, long_text()]
    expected = logits(make(tiny_reranker_dir).rerank(QUERY, passages))
    reranker = make(tiny_reranker_dir)
    sizes: list[int] = []
    forward = reranker._forward

    def forward_with_little_memory(pairs):
        sizes.append(len(pairs))
        if len(pairs) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(pairs)

    reranker._forward = forward_with_little_memory
    assert logits(reranker.rerank(QUERY, passages)) == pytest.approx(expected, abs=1e-5)
    assert max(sizes) > 2 and sizes[-1] <= 2


def test_out_of_memory_on_a_single_pair_is_raised(tiny_reranker_dir):
    reranker = make(tiny_reranker_dir)

    def no_memory(pairs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    reranker._forward = no_memory
    with pytest.raises(torch.cuda.OutOfMemoryError):
        reranker.rerank(QUERY, PASSAGES)


def test_other_errors_propagate_untouched(tiny_reranker_dir):
    reranker = make(tiny_reranker_dir)
    calls: list[int] = []

    def broken(pairs):
        calls.append(len(pairs))
        raise RuntimeError("device-side assert triggered")

    reranker._forward = broken
    with pytest.raises(RuntimeError, match="device-side assert"):
        reranker.rerank(QUERY, PASSAGES)
    assert calls == [len(PASSAGES)]  # no retry, no split


def test_concurrent_first_calls_load_once_and_agree(tiny_reranker_dir, reranker, monkeypatch):
    import transformers

    loads: list[str] = []
    original = transformers.AutoModelForSequenceClassification.from_pretrained

    def counting(*args, **kwargs):
        loads.append(str(args[0]))
        return original(*args, **kwargs)

    monkeypatch.setattr(
        transformers.AutoModelForSequenceClassification, "from_pretrained", counting
    )
    fresh = make(tiny_reranker_dir)
    results: list[list[float]] = []
    threads = [
        threading.Thread(target=lambda: results.append(logits(fresh.rerank(QUERY, PASSAGES))))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1
    assert results == [logits(reranker.rerank(QUERY, PASSAGES))] * 4
