"""docker-compose.yml, .env.example, infra/redis and infra/docker, checked without Docker.

Docker cannot run where these tests run, so the compose file is read the way Compose
reads it: YAML (anchors and ``<<`` merge keys), then ``${VAR}`` interpolation with the
values of .env.example, then validation against the Compose Specification's JSON schema.
The schema is the real one, vendored in tests/data/compose-spec.json (its source is in
tests/data/README.md). On top of the schema: every SIEVE_* variable an app container gets
is a field of one layer's settings and the result is a valid ``ServiceSettings``; the two
Redis roles; the GPU reservations; healthchecks and start order; the Dockerfiles' torch pin.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from api.settings import LAYERS, ServiceSettings, parse_api_keys

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SCHEMA_FILE = ROOT / "tests/data/compose-spec.json"
DATASTORES = ("elasticsearch", "qdrant", "postgres")
SECRETS = (
    "ELASTIC_PASSWORD",
    "QDRANT_API_KEY",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "SIEVE_API_KEYS",
    "SIEVE_CURSOR_SECRET",
)
SIEVE_VARIABLES = frozenset().union(*(layer.variables() for layer in LAYERS))


# --- Compose's interpolation, as far as this project uses it ---------------------------

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class UnsetVariable(ValueError):
    """``${NAME:?message}`` with NAME unset or empty: Compose refuses to start."""


@dataclass(frozen=True)
class Ref:
    name: str
    op: str  # "", ":-", "-", ":?", "?", ":+", "+"
    arg: str  # the default, the error message or the alternative; may nest ${...}


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth, i = depth + 1, i + 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unclosed ${{ in {text!r}")


def _scan(text: str) -> Iterator[str | Ref]:
    """Literal text (``$$`` unescaped to ``$``) and variable references, in order."""
    i, literal = 0, []
    while i < len(text):
        if text[i] != "$":
            literal.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            literal.append("$")
            i += 2
        else:
            if literal:
                yield "".join(literal)
                literal = []
            braced = text.startswith("${", i)
            match = _NAME.match(text, i + 2 if braced else i + 1)
            if match is None:
                raise ValueError(f"invalid interpolation at {i} in {text!r}")
            if not braced:
                yield Ref(match.group(), "", "")
                i = match.end()
                continue
            end = _closing_brace(text, i + 2)
            rest = text[match.end() : end]
            op = rest[:2] if rest.startswith(":") else rest[:1]
            if op not in ("", ":-", "-", ":?", "?", ":+", "+"):
                raise ValueError(f"invalid interpolation {text[i : end + 1]!r}")
            yield Ref(match.group(), op, rest[len(op) :])
            i = end + 1
    if literal:
        yield "".join(literal)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``text`` with every ``${...}`` replaced as Compose does (defaults are lazy)."""
    out = []
    for part in _scan(text):
        if isinstance(part, str):
            out.append(part)
            continue
        value = env.get(part.name)
        if value == "" and ":" in part.op:
            value = None  # the ":" forms treat empty as unset
        if part.op in (":?", "?"):
            if value is None:
                raise UnsetVariable(f"{part.name}: {part.arg}")
            out.append(value)
        elif part.op in (":+", "+"):
            out.append("" if value is None else interpolate(part.arg, env))
        else:  # "", ":-", "-"; an unset plain ${NAME} is "" (Compose warns)
            out.append(interpolate(part.arg, env) if value is None else value)
    return "".join(out)


def referenced(text: str) -> set[str]:
    """Every variable ``text`` may read, in defaults too."""
    names: set[str] = set()
    for part in _scan(text):
        if isinstance(part, Ref):
            names |= {part.name} | referenced(part.arg)
    return names


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    """Values are interpolated, mapping keys are not (as in Compose)."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env) for value in node]
    return node


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; # comments; surrounding quotes removed."""
    env = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and _NAME.fullmatch(key), f"{path.name}:{number}: not KEY=VALUE: {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env


# --- Fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def dotenv() -> dict[str, str]:
    return read_dotenv(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any], dotenv: dict[str, str]) -> dict[str, Any]:
    """The compose model as `docker compose config` would see it with .env.example."""
    return interpolate_tree(raw, dotenv)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def app_services(services: Mapping[str, Any]) -> list[str]:
    return [name for name, s in services.items() if s.get("image", "").startswith("sieve-")]


def container_env(service: Mapping[str, Any], dotenv: Mapping[str, str]) -> dict[str, str]:
    """The environment a container starts with: env_file first, `environment` over it."""
    files = service.get("env_file", [])
    files = [files] if isinstance(files, str) else files
    env: dict[str, str] = {}
    for item in files:
        assert item == ".env", "the app services read .env (checked as .env.example)"
        env.update(dotenv)
    env.update({key: str(value) for key, value in service.get("environment", {}).items()})
    return env


def config_of(
    services: Mapping[str, Any], dotenv: Mapping[str, str], name: str
) -> ServiceSettings:
    return ServiceSettings.from_env(container_env(services[name], dotenv))


def command_of(service: Mapping[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def option(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


# --- The schema -----------------------------------------------------------------------


def schema_errors(document: Any) -> list[str]:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in validator_class(schema).iter_errors(document)
    ]


def test_compose_file_is_valid_under_the_compose_specification(compose):
    assert schema_errors(compose) == []
    assert "version" not in compose, "the top-level version key is obsolete"


def test_the_schema_check_catches_mistakes(compose):
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_done"
    broken["services"]["redis-cache"]["helthcheck"] = {}
    errors = "\n".join(schema_errors(broken))
    assert "service_done" in errors and "helthcheck" in errors


def test_every_interpolated_variable_is_in_env_example(raw, dotenv):
    names = set().union(*(referenced(s) for s in _strings(raw)))
    assert names, "expected ${...} in docker-compose.yml"
    assert sorted(names - dotenv.keys()) == []


def test_secrets_are_required_not_defaulted(raw, dotenv):
    for secret in SECRETS:
        env = {k: v for k, v in dotenv.items() if k != secret}
        with pytest.raises(UnsetVariable, match=secret):
            interpolate_tree(raw, env)
        with pytest.raises(UnsetVariable, match=secret):
            interpolate_tree(raw, {**env, secret: ""})


def test_interpolation_follows_compose_rules():
    env = {"A": "a", "EMPTY": ""}
    assert interpolate("$$A ${A} $A ${B:-x${A}} ${EMPTY:-d} ${EMPTY-d} ${A:+y}", env) == (
        "$A a a xa d  y"
    )
    assert referenced("${X:-${Y}} $$Z $W") == {"X", "Y", "W"}
    with pytest.raises(UnsetVariable, match="B: say so"):
        interpolate("${B:?say so}", env)


# --- One set of settings --------------------------------------------------------------


def test_every_sieve_variable_is_a_settings_field(raw, dotenv, services):
    in_compose = {
        key
        for service in services.values()
        for key in service.get("environment", {})
        if key.startswith("SIEVE_")
    }
    in_anchor = {key for key in raw["x-sieve-env"] if key.startswith("SIEVE_")}
    in_env_file = {key for key in dotenv if key.startswith("SIEVE_")}
    assert sorted((in_compose | in_anchor | in_env_file) - SIEVE_VARIABLES) == []


def test_app_services_load_valid_settings_with_nothing_unknown(services, dotenv):
    names = app_services(services)
    assert {"api", "migrate", "worker-index", "worker-rerank"} <= set(names)
    for name in names:
        config = config_of(services, dotenv, name)
        settings, api, workers = config.engine, config.api, config.workers
        assert dict(config.extra) == {}, name
        assert settings.keyword_backend == "elasticsearch", name
        assert settings.es_url == "http://elasticsearch:9200", name
        assert settings.es_username == "elastic" and settings.es_password, name
        assert settings.es_password == dotenv["ELASTIC_PASSWORD"], name
        assert settings.vector_backend == "qdrant", name
        assert settings.qdrant_url == "http://qdrant:6333", name
        assert settings.qdrant_api_key == dotenv["QDRANT_API_KEY"], name
        assert settings.registry == (
            f"postgresql+psycopg://{dotenv['POSTGRES_USER']}:{dotenv['POSTGRES_PASSWORD']}"
            f"@postgres:5432/{dotenv['POSTGRES_DB']}"
        ), name
        assert workers.broker_url == "redis://redis-broker:6379/0", name
        assert settings.cache_url == "redis://redis-cache:6379/0", name
        assert parse_api_keys(api.api_keys) and api.cursor_secret, name


def test_api_reranks_on_the_gpu_workers_and_serves_all_interfaces(services, dotenv):
    from api.cli.serve import serve_plan

    config = config_of(services, dotenv, "api")
    assert config.engine.rerank_backend == "celery"
    plan = serve_plan(config)
    # Keys are set, so gunicorn binds every interface of the container, and the
    # distributed backends let it run SIEVE_WORKERS processes.
    assert plan.host == "0.0.0.0" and plan.workers == int(dotenv["SIEVE_WORKERS"])
    published = [str(p).rsplit(":", 1)[-1] for p in services["api"]["ports"]]
    assert published == [str(config.api.port)]


def test_app_services_share_one_environment(services):
    per_worker = {"SIEVE_RERANK_BACKEND", "SIEVE_RERANK_DEVICE", "SIEVE_RERANK_DTYPE"}

    def shared(name: str) -> dict[str, Any]:
        env = services[name]["environment"]
        return {k: v for k, v in env.items() if k.startswith("SIEVE_") and k not in per_worker}

    for name in app_services(services):
        assert shared(name) == shared("api"), name
        assert services[name].get("env_file") == ".env", name


def test_the_cli_accepts_every_compose_command(services):
    import click

    from api.cli import main

    ctx = click.Context(main)
    missing = []
    for name in app_services(services):
        command = command_of(services[name])
        assert command[0] == "sieve", name
        sub = main.get_command(ctx, command[1])
        if sub is None:
            missing.append(command[1])
            continue
        sub.make_context(command[1], command[2:], parent=ctx)  # raises on bad options
    if missing == ["init"]:
        pytest.skip("`sieve init` does not exist yet (docker-compose.yml's migrate runs it)")
    assert missing == [], f"no such sieve command(s): {missing}"


def test_index_workers_consume_the_index_queue(services, dotenv):
    workers = config_of(services, dotenv, "worker-index").workers
    assert option(command_of(services["worker-index"]), "--queues") == workers.index_queue


# --- Redis: a broker that never evicts, a cache that does -----------------------------


def redis_conf(service: Mapping[str, Any]) -> dict[str, list[str]]:
    """The service's config file, then its command-line overrides."""
    command = command_of(service)
    assert command[:2] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    mount = next(v for v in service["volumes"] if v.split(":")[1].endswith("redis.conf"))
    source, _, mode = mount.split(":")
    assert mode == "ro"
    conf: dict[str, list[str]] = {}
    for line in (ROOT / source).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, *args = shlex.split(line)
            conf[key.lower()] = args
    extra = command[2:]
    for i in range(0, len(extra), 2):
        conf[extra[i].removeprefix("--").lower()] = [extra[i + 1]]
    return conf


def named_volumes(service: Mapping[str, Any], compose: Mapping[str, Any]) -> set[str]:
    return {v.split(":")[0] for v in service.get("volumes", [])} & set(compose["volumes"])


def test_broker_redis_never_evicts_and_keeps_an_append_only_file(services, compose):
    conf = redis_conf(services["redis-broker"])
    assert conf["maxmemory-policy"] == ["noeviction"]
    assert conf["appendonly"] == ["yes"] and conf["appendfsync"] == ["everysec"]
    # The append-only file lives in a named volume, so it survives the container.
    data = [v.split(":") for v in services["redis-broker"]["volumes"]]
    assert any(source in compose["volumes"] and target == "/data" for source, target, *_ in data)


def test_cache_redis_is_bounded_evicts_lru_and_is_a_separate_instance(services, compose, dotenv):
    conf = redis_conf(services["redis-cache"])
    assert conf["maxmemory"] == [dotenv["CACHE_MAXMEMORY"]]
    assert conf["maxmemory-policy"] == ["allkeys-lru"]
    assert conf["save"] == [""] and conf["appendonly"] == ["no"]
    broker, cache = services["redis-broker"], services["redis-cache"]
    assert named_volumes(cache, compose).isdisjoint(named_volumes(broker, compose))
    assert set(cache["volumes"]).isdisjoint(broker["volumes"])


# --- GPUs -----------------------------------------------------------------------------


def rerank_workers(services: Mapping[str, Any]) -> list[str]:
    return [name for name in services if name.startswith("worker-rerank")]


def test_each_rerank_worker_is_one_process_on_its_own_gpu(services, dotenv):
    devices_seen: list[str] = []
    for name in rerank_workers(services):
        service = services[name]
        command = command_of(service)
        assert option(command, "--concurrency") == "1", name
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"], name
        # Compose rejects a reservation with both; Docker maps count N to GPUs 0..N-1.
        assert ("count" in device) != ("device_ids" in device), name
        devices_seen += [str(device["count"] - 1)] if "count" in device else device["device_ids"]
        config = config_of(services, dotenv, name)
        settings = config.engine
        assert option(command, "--queues") == config.workers.rerank_queue, name
        assert settings.rerank_backend == "local", name
        assert (settings.rerank_device, settings.rerank_dtype) == ("cuda", "float16"), name
        mount = f"./models:{settings.rerank_models_dir}:ro"
        assert mount in service["volumes"], name
    assert services["worker-rerank"]["deploy"]["resources"]["reservations"]["devices"][0][
        "count"
    ] in (1, "1")
    assert len(devices_seen) == len(set(devices_seen)), f"two workers share a GPU: {devices_seen}"


def test_the_extra_gpu_workers_are_off_unless_their_profile_is_on(services, dotenv):
    extra = [name for name in rerank_workers(services) if name != "worker-rerank"]
    assert extra and "profiles" not in services["worker-rerank"]
    enabled = dotenv["COMPOSE_PROFILES"].split(",")
    for name in extra:
        assert services[name]["profiles"] and not set(services[name]["profiles"]) & set(enabled)


# --- Health and start order -----------------------------------------------------------


def test_datastores_and_api_have_healthchecks(services):
    for name in (*DATASTORES, "redis-broker", "redis-cache", "api"):
        check = services[name].get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), name
    es_check = " ".join(services["elasticsearch"]["healthcheck"]["test"])
    # The password is read in the container ($$ in the file), not written into the check.
    assert '-u "elastic:$ELASTIC_PASSWORD"' in es_check
    assert "/_cluster/health?wait_for_status=yellow" in es_check
    api_check = " ".join(services["api"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/readyz" in api_check


def test_start_order(services):
    migrate = services["migrate"]
    assert command_of(migrate) == ["sieve", "init"] and migrate["restart"] == "no"
    for store in DATASTORES:
        assert migrate["depends_on"][store]["condition"] == "service_healthy"
    for name in ("api", "worker-index"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }, name
        assert services[name]["depends_on"]["redis-broker"]["condition"] == "service_healthy"
    assert services["api"]["depends_on"]["redis-cache"]["condition"] == "service_healthy"


def test_dependencies_can_be_met(services, dotenv):
    """A healthy-wait needs a healthcheck; a profiled service must be an optional dependency."""
    enabled = set(dotenv["COMPOSE_PROFILES"].split(","))
    assert set(DATASTORES) <= enabled, ".env.example runs the bundled datastores"
    for name, service in services.items():
        for target, condition in service.get("depends_on", {}).items():
            assert target in services, f"{name} -> {target}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} -> {target}"
            if services[target].get("profiles"):
                assert condition.get("required") is False, f"{name} -> {target}"


def test_every_bind_mount_source_exists_and_named_volumes_are_declared(services, compose):
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                if source != "./models":  # the operator's weights, git-ignored
                    assert (ROOT / source).exists(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: {source}"


# --- Datastores -----------------------------------------------------------------------


def test_elasticsearch_single_node_with_security_and_a_fixed_heap(services, compose, dotenv):
    es = services["elasticsearch"]
    env = es["environment"]
    assert env["discovery.type"] == "single-node"
    assert env["xpack.security.enabled"] == "true"
    assert env["xpack.security.http.ssl.enabled"] == "false"
    assert env["ELASTIC_PASSWORD"] == dotenv["ELASTIC_PASSWORD"]
    heap = dict(re.findall(r"-(Xm[sx])(\S+)", env["ES_JAVA_OPTS"]))
    assert heap["Xms"] == heap["Xmx"], "min and max heap must match"
    assert es["ulimits"]["memlock"] == {"soft": -1, "hard": -1}
    assert named_volumes(es, compose)
    assert "ports" not in es, "only the compose network reaches it (TLS is off)"


def test_server_versions_match_the_clients(services):
    es_major = services["elasticsearch"]["image"].rsplit(":", 1)[1].split(".")[0]
    assert es_major == version("elasticsearch").split(".")[0]
    server = services["qdrant"]["image"].rsplit(":v", 1)[1].split(".")[:2]
    client = version("qdrant-client").split(".")[:2]
    # qdrant-client warns when the server is more than one minor version away.
    assert server[0] == client[0] and abs(int(server[1]) - int(client[1])) <= 1


def test_es_index_template_file_is_the_generated_one():
    from search.keyword.elasticsearch_index import index_template_body

    template = ROOT / "infra/elasticsearch/index-template.json"
    assert json.loads(template.read_text(encoding="utf-8")) == index_template_body()


# --- Images ---------------------------------------------------------------------------


def torch_pin() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    (pin,) = [dep for dep in project["dependencies"] if re.match(r"torch\b", dep)]
    return pin


def test_dockerfiles_install_the_pinned_torch_build_first(services):
    pin = torch_pin()  # torch==2.13.0 today; the images follow pyproject.toml
    assert pin.startswith("torch==")
    for name, index in (("Dockerfile", "/whl/cpu"), ("Dockerfile.cuda", "/whl/cu12")):
        text = (ROOT / "infra/docker" / name).read_text(encoding="utf-8")
        torch_line = text.index(f"pip install {pin} --index-url")
        assert index in text, name
        assert torch_line < text.index("pip install -e ."), f"{name}: torch goes first"
        assert "psycopg[binary]" in text, name
        users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
        assert users and users[-1] not in ("root", "0"), f"{name}: runs as root"
    built = {s["build"]["dockerfile"] for s in services.values() if "build" in s}
    assert built == {"infra/docker/Dockerfile", "infra/docker/Dockerfile.cuda"}


def test_build_context_leaves_out_secrets_and_weights():
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert {".env", "models/", ".venv/", ".git/"} <= set(ignored)
