import pickle
from pathlib import Path

import pytest

from api.settings import LAYERS, ServiceSettings
from search.config import BATCH_TIMEOUT_S, Settings, unknown_variables
from search.errors import BackendUnavailable, ConfigError, LoadError

pytestmark = pytest.mark.unit


def test_defaults_are_the_embedded_engines():
    s = Settings.from_env({})
    assert s.keyword_backend == "tantivy" and s.vector_backend == "qdrant-edge"
    assert s.data_dir == Path("data")
    assert s.registry.startswith("sqlite:///") and s.registry.endswith("registry.db")


def test_reads_typed_values_from_sieve_variables():
    env = {
        "SIEVE_DATA_DIR": "/tmp/x",
        "SIEVE_CHUNK_TOKENS": "128",
        "SIEVE_LEG_TIMEOUT_S": "0.5",
        "SIEVE_ALLOW_DOWNLOAD": "yes",
        "SIEVE_FUSION_WEIGHTS": "1, 0.5",
        "SIEVE_EMBED_LANGUAGES": "en,zh",
        "SIEVE_SOMETHING_NEW": "kept",
        "OTHER": "ignored",
    }
    s = Settings.from_env(env)
    assert s.data_dir == Path("/tmp/x") and s.chunk_tokens == 128 and s.leg_timeout_s == 0.5
    assert s.allow_download is True
    assert s.fusion_weights == (1.0, 0.5) and s.embed_languages == ("en", "zh")
    assert unknown_variables(env, LAYERS) == {"SIEVE_SOMETHING_NEW": "kept"}
    assert ServiceSettings.from_env(env).extra == {"SIEVE_SOMETHING_NEW": "kept"}


def test_optional_numbers_are_unset_when_empty():
    unset = Settings.from_env({"SIEVE_RERANK_MAX_LENGTH": "", "SIEVE_RERANK_SKIP_GAP": ""})
    assert (unset.rerank_max_length, unset.rerank_skip_gap) == (None, None)
    given = Settings.from_env({"SIEVE_RERANK_MAX_LENGTH": "256", "SIEVE_RERANK_SKIP_GAP": "0.2"})
    assert (given.rerank_max_length, given.rerank_skip_gap) == (256, 0.2)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SIEVE_KEYWORD_BACKEND": "solr"}, "choose one of tantivy, elasticsearch"),
        ({"SIEVE_FUSION": "borda"}, "choose one of rrf"),
        ({"SIEVE_CHUNK_TOKENS": "many"}, "SIEVE_CHUNK_TOKENS='many' is not a valid value"),
        ({"SIEVE_ALLOW_DOWNLOAD": "perhaps"}, "SIEVE_ALLOW_DOWNLOAD"),
        ({"SIEVE_FUSION_WEIGHTS": "1,2,3"}, "SIEVE_FUSION_WEIGHTS"),
        ({"SIEVE_KEYWORD_BACKEND": "elasticsearch"}, "needs SIEVE_ES_URL"),
        ({"SIEVE_VECTOR_BACKEND": "qdrant"}, "exactly one of SIEVE_QDRANT_URL"),
        ({"SIEVE_CHUNK_OVERLAP": "150"}, "SIEVE_CHUNK_OVERLAP"),
        # The other layers' settings, and the checks across layers.
        ({"SIEVE_PORT": "http"}, "SIEVE_PORT='http' is not a valid value"),
        ({"SIEVE_INDEX_BACKEND": "cron"}, "choose one of thread, celery"),
        ({"SIEVE_TASK_TIME_LIMIT_S": "400"}, "SIEVE_TASK_TIME_LIMIT_S"),
        ({"SIEVE_INDEX_BACKEND": "celery"}, "SIEVE_INDEX_BACKEND=celery needs SIEVE_BROKER_URL"),
        ({"SIEVE_RERANK_BACKEND": "celery"}, "SIEVE_RERANK_BACKEND=celery needs SIEVE_BROKER_URL"),
    ],
)
def test_bad_values_fail_loudly_naming_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        ServiceSettings.from_env(env)


def test_overrides_go_to_the_layer_that_has_the_field():
    config = ServiceSettings().with_overrides(data_dir=Path("d"), port=9000, index_queue="q")
    assert (config.engine.data_dir, config.api.port, config.workers.index_queue) == (
        Path("d"), 9000, "q"
    )
    with pytest.raises(TypeError, match="no layer has a setting named 'nonsense'"):
        ServiceSettings().with_overrides(nonsense=1)


def test_zero_is_not_replaced_by_a_default():
    assert Settings.from_env({"SIEVE_CHUNK_OVERLAP": "0"}).chunk_overlap == 0


def test_errors_pickle_with_their_data():
    err = pickle.loads(pickle.dumps(BackendUnavailable("down", backend="qdrant", attempt=3)))
    assert isinstance(err, BackendUnavailable)
    assert err.backend == "qdrant" and err.data["attempt"] == 3 and str(err) == "down"
    load = pickle.loads(pickle.dumps(LoadError("bad line", path="a.jsonl", line=7)))
    assert (load.path, load.line) == ("a.jsonl", 7)


def test_batch_commands_wait_for_the_legs_and_the_reranker():
    served = Settings.from_env({})
    batch = served.for_batch()
    assert (served.leg_timeout_s, served.rerank_timeout_s) == (5.0, 2.0)
    assert batch.leg_timeout_s == batch.rerank_timeout_s == BATCH_TIMEOUT_S
    patient = served.with_overrides(rerank_timeout_s=2 * BATCH_TIMEOUT_S).for_batch()
    assert patient.rerank_timeout_s == 2 * BATCH_TIMEOUT_S  # never shortened
