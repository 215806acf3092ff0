"""Pair keys, value encoding and the LRU store; Redis behaviour is in tests/integration."""

from __future__ import annotations

import math

import pytest

from search.config import Settings
from search.errors import ConfigError
from search.scores import (
    KEY_PREFIX,
    CachedScore,
    LruScoreStore,
    RedisScoreStore,
    decode_score,
    encode_score,
    make_store,
    pair_key,
    pair_keys,
)

pytestmark = pytest.mark.unit

MODEL = "fake/reranker@rev1:max_length=512"
PASSAGES = ["Boil the rice for ten minutes.", "Check the tyre pressure.", "Keep the seeds dry."]
# Not round: an exact float round trip is what a store must keep.
LOGIT = -math.pi * 17.3 / 7


# --- keys ---------------------------------------------------------------------------------


def test_key_shape_and_inputs():
    key = pair_key(MODEL, "rice", PASSAGES[0])
    assert key.startswith(KEY_PREFIX) and len(key) == len(KEY_PREFIX) + 64
    assert pair_key(MODEL, "rice", PASSAGES[0]) == key
    assert pair_key(MODEL.replace("rev1", "rev2"), "rice", PASSAGES[0]) != key
    assert pair_key(MODEL, "rice", PASSAGES[0] + " ") != key  # any edit of the passage
    assert pair_key(MODEL, "rice cooker", PASSAGES[0]) != key


def test_key_ignores_query_case_width_and_whitespace():
    key = pair_key(MODEL, "how to cook rice", PASSAGES[0])
    for variant in ("  How   to\tCOOK rice\n", "ＨＯＷ to cook rice", "how to cook RICE "):
        assert pair_key(MODEL, variant, PASSAGES[0]) == key


def test_key_parts_do_not_run_together():
    # Length-prefixed parts: moving text between model_key and query changes the key.
    assert pair_key("ab", "c", "p") != pair_key("a", "bc", "p")


def test_key_tolerates_lone_surrogates():
    assert pair_key(MODEL, "q\ud800", "p\udfff").startswith(KEY_PREFIX)


def test_pair_keys_is_pair_key_per_passage():
    assert pair_keys(MODEL, "q", PASSAGES) == [pair_key(MODEL, "q", p) for p in PASSAGES]


# --- value encoding -----------------------------------------------------------------------


def test_encoding_round_trips_exactly():
    value = CachedScore(LOGIT, 3, 417)
    raw = encode_score(value)
    assert len(raw) == 25
    assert decode_score(raw) == value


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"garbage",
        "text, not bytes",
        encode_score(CachedScore(1.0, 0, 1))[:-1],
        b"\x02" + encode_score(CachedScore(1.0, 0, 1))[1:],  # unknown format version
        encode_score(CachedScore(math.nan, 0, 1)),
        encode_score(CachedScore(math.inf, 0, 1)),
    ],
)
def test_garbage_decodes_as_a_miss(raw):
    assert decode_score(raw) is None


# --- LRU store ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def score(n: float) -> CachedScore:
    return CachedScore(n, 0, 0)


def test_lru_evicts_least_recently_used():
    store = LruScoreStore(2)
    store.set_many({"a": score(1), "b": score(2)}, ttl_s=60)
    assert store.get_many(["a"]) == [score(1)]  # a is now the most recent
    store.set_many({"c": score(3)}, ttl_s=60)
    assert store.get_many(["a", "b", "c"]) == [score(1), None, score(3)]
    store.set_many({"d": score(4)}, ttl_s=60)  # c was read last, a before it
    assert store.get_many(["a", "c", "d"]) == [None, score(3), score(4)]
    assert store.stats() == {"hits": 5, "misses": 2, "errors": 0, "timeouts": 0, "writes": 4}


def test_lru_honours_ttl():
    clock = Clock()
    store = LruScoreStore(10, clock=clock)
    store.set_many({"a": score(1)}, ttl_s=10)
    store.set_many({"b": score(2)}, ttl_s=15)
    clock.now += 9
    assert store.get_many(["a", "b"]) == [score(1), score(2)]
    clock.now += 1  # a's 10 s are up
    assert store.get_many(["a", "b"]) == [None, score(2)]
    store.set_many({"a": score(5)}, ttl_s=10)  # a rewrite starts a new TTL
    clock.now += 9
    assert store.get_many(["a", "b"]) == [score(5), None]


def test_stores_validate_their_settings():
    with pytest.raises(ConfigError):
        LruScoreStore(0)
    with pytest.raises(ConfigError, match="redis://"):
        RedisScoreStore("http://localhost:6379", 0.05)
    with pytest.raises(ConfigError, match=r"redis://u:\*\*\*@h:x"):  # password never shown
        RedisScoreStore("redis://u:secret@h:x/0", 0.05)
    with pytest.raises(ConfigError):
        RedisScoreStore("redis://localhost:6379", 0)


def test_make_store_follows_settings():
    assert isinstance(make_store(Settings(cache_lru_size=7)), LruScoreStore)
    # The Redis store connects lazily: building it against nothing must not fail.
    store = make_store(Settings(cache_url="redis://127.0.0.1:1/0", cache_timeout_s=0.2))
    assert isinstance(store, RedisScoreStore) and store.timeout_s == 0.2
    assert store.stats()["errors"] == 0
