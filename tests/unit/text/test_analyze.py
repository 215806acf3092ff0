"""The BM25 analyser: English stemming/stopwords/folding, Chinese segmentation, mixed text."""

from __future__ import annotations

import random
import threading

import pytest

from search.text import Analyzer, analysis_version, analyze, script_of
from search.text.analyze import ANALYSIS_VERSION, CHINESE_STOPWORDS, ENGLISH_STOPWORDS

pytestmark = pytest.mark.unit


def test_english_sentence():
    assert analyze("The runners were running quickly to the connected stations!") == [
        "runner",
        "run",
        "quickli",
        "connect",
        "station",
    ]


@pytest.mark.parametrize(("a", "b"), [("running", "runs"), ("connection", "connected")])
def test_stemming_conflates_forms(a, b):
    assert analyze(a) == analyze(b)
    assert len(analyze(a)) == 1


def test_stopwords_removed():
    assert analyze("the and of is a to in it was") == []
    assert analyze("what is the role of vitamin d") == ["role", "vitamin", "d"]


def test_accent_folding_and_case():
    assert analyze("Café") == analyze("cafe") == ["cafe"]
    assert analyze("NAÏVE naïve") == ["naiv", "naiv"]
    assert analyze("Straße Ørsted") == ["strass", "orst"]


def test_digits_kept_and_split_on_punctuation():
    assert analyze("COVID-19 covid19 in 2020, e.g. 3.5") == [
        "covid",
        "19",
        "covid19",
        "2020",
        "e",
        "g",
        "3",
        "5",
    ]


def test_single_letters_are_kept():
    # "vitamin c" and "hepatitis b" must stay searchable; "a", "i", "s", "t" are stopwords.
    assert analyze("vitamin C, hepatitis B, it's") == ["vitamin", "c", "hepat", "b"]


def test_fullwidth_and_compatibility_forms():
    assert analyze("ＢＭ２５ ﬁle") == ["bm25", "file"]


def test_overlong_tokens_dropped():
    assert analyze("x" * 65 + " kept") == ["kept"]


def test_chinese_segmentation_gives_words():
    tokens = analyze("机器学习的应用")
    assert "机器" in tokens and "学习" in tokens and "应用" in tokens
    assert "的" not in tokens  # particle is a stopword


def test_search_mode_adds_sub_words():
    tokens = analyze("中华人民共和国")
    assert "中华人民共和国" in tokens
    assert {"中华", "人民", "共和国"} <= set(tokens)


@pytest.mark.parametrize(
    ("traditional", "simplified"),
    [
        ("機器學習的應用", "机器学习的应用"),
        ("深度學習模型在語音識別上的應用", "深度学习模型在语音识别上的应用"),
        ("臺灣大學的圖書館", "台湾大学的图书馆"),
    ],
)
def test_traditional_equals_simplified(traditional, simplified):
    assert analyze(traditional) == analyze(simplified)
    assert analyze(simplified)


def test_chinese_punctuation_and_stopwords_dropped():
    tokens = analyze("你好，世界！这是测试。")
    assert not {"，", "！", "。", "这", "是"} & set(tokens)
    assert "测试" in tokens


def test_mixed_text_keeps_order():
    assert analyze("Transformer模型的注意力机制") == ["transform", "模型", "注意", "注意力", "机制"]
    tokens = analyze("研究人员用BERT做retrieval")
    assert tokens.index("bert") < tokens.index("retriev")
    assert "研究" in tokens


@pytest.mark.parametrize("text", ["", " ", "\n\t", "!!!", "。，、", "\ud800", "\x00"])
def test_nothing_to_index(text):
    assert analyze(text) == []


def test_other_scripts_pass_through():
    assert analyze("Привет мир") == ["привет", "мир"]
    assert analyze("हिन्दी भाषा") == ["हिन्दी", "भाषा"]  # vowel signs do not split words
    assert analyze("한국어 텍스트") == ["한국어", "텍스트"]


def test_analyzer_options():
    assert Analyzer(stem=False).analyze("running dogs") == ["running", "dogs"]
    assert Analyzer(stopwords=frozenset()).analyze("the dog") == ["the", "dog"]
    assert Analyzer(chinese_stopwords=frozenset()).analyze("我的") == ["我", "的"]


def test_stopword_lists_are_compact():
    assert 35 <= len(ENGLISH_STOPWORDS) <= 180
    assert 60 <= len(CHINESE_STOPWORDS) <= 250
    assert "的" in CHINESE_STOPWORDS


def test_chinese_function_words_are_not_terms():
    # The query that matched CPR and mosquito facts on 中 alone.
    tokens = analyze("我想要学习深度学习中的Transformer架构")
    assert not {"我", "想", "想要", "要", "中", "的"} & set(tokens)
    assert {"学习", "深度", "transform", "架构"} <= set(tokens)
    assert analyze("颱風來之前要準備什麼？") == ["台风", "之前", "准备"]
    assert analyze("被蚊子叮咬后怎么止痒？") == ["蚊子", "叮咬", "后", "止痒"]


def test_meaningful_single_characters_are_kept():
    # Only listed characters are dropped; a one-character word is still a word,
    # also when it is the whole query.
    assert analyze("茶") == ["茶"]
    assert analyze("水和茶") == ["水", "茶"]
    assert analyze("中") == analyze("什麼") == []


def test_chinese_stopwords_file_is_clean():
    # Simplified only (Traditional forms are derived), no duplicates or blanks.
    from opencc import OpenCC

    to_simplified = OpenCC("t2s").convert
    assert all(to_simplified(word) == word for word in CHINESE_STOPWORDS)
    assert all(word and " " not in word for word in CHINESE_STOPWORDS)
    # A listed word jieba never emits whole would be dead weight.
    assert {w: analyze(w) for w in CHINESE_STOPWORDS if analyze(w)} == {}


@pytest.mark.parametrize("config", ["s2t", "s2tw", "s2hk"])  # generic, Taiwan, Hong Kong
def test_traditional_stopwords_are_dropped_too(config):
    from opencc import OpenCC

    to_traditional = OpenCC(config).convert
    kept = {w: analyze(to_traditional(w)) for w in CHINESE_STOPWORDS}
    assert {w: t for w, t in kept.items() if t} == {}


def test_script_of():
    assert script_of("hybrid search engine") == "latin"
    assert script_of("机器学习的应用") == "cjk"
    assert script_of("Transformer模型的注意力机制") == "cjk"
    assert script_of("the BERT model 模型") == "latin"  # 2 of 14 letters
    assert script_of("ひらがな") == "cjk"
    assert script_of("12345 !!") == "other"
    assert script_of("") == "other"


def test_never_raises_and_is_deterministic_on_random_text():
    rng = random.Random(42)
    alphabet = "aZé\u0301 1_.-,中國语。！ßØ\u093f\ud800\x00\t\nカ한ＡＢ"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        tokens = analyze(text)
        assert tokens == analyze(text)
        assert all(tokens) and all(" " not in t for t in tokens)


def test_thread_safe():
    texts = [f"running connected systems {i} 機器學習的應用 naïve" for i in range(200)]
    expected = [analyze(t) for t in texts]
    results: dict[int, list[list[str]]] = {}

    def work(n: int) -> None:
        results[n] = [analyze(t) for t in texts]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results.values())


def test_ascii_fast_path_agrees_with_unicode_path():
    # ASCII text skips normalisation; adding one non-ASCII word must not
    # change how the ASCII words are analysed.
    rng = random.Random(3)
    words = ["Running", "the", "COVID-19", "e.g.", "snake_case", "x2", "connected", "R&D"]
    for _ in range(200):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
        assert analyze(text + " café") == analyze(text) + ["cafe"]


def test_the_analysis_version_changes_with_the_rules_and_the_stop_words():
    current = analysis_version()
    assert current == analysis_version() and current.startswith(f"{ANALYSIS_VERSION}-")
    assert analysis_version(ANALYSIS_VERSION + 1) != current
    assert analysis_version(chinese=CHINESE_STOPWORDS | {"茶"}) != current
    assert analysis_version(english=ENGLISH_STOPWORDS - {"the"}) != current
