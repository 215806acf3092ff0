"""API keys: 401 without a key, 403 for a search key on admin endpoints, and a key scoped
to one collection seeing every other collection as 404, through every endpoint."""

from __future__ import annotations

import pytest
from api_testkit import app_config, error_code, wait_task

from api.auth import PUBLIC, ROLE_ATTR

pytestmark = pytest.mark.integration

A, B = "auth-zone-a", "auth-zone-b"
KEYS = f"adm:admin,srch:search,scoped:admin:{A},scopedsearch:search:{A}"
SAMPLE_DOC = {"id": "doc-1", "text": "Lightning safety: stay indoors during a storm."}
# Path arguments of every route (values for the collection are set per test).
ARGS = {"doc_id": "doc-1", "task_id": "some-task", "name": "VERSION"}
BODIES = {
    "/v1/search": {"query": "storm"},
    "/v1/context": {"query": "storm"},
    "/v1/collections": {"name": "x"},
    "/v1/collections/<c>/documents": {"documents": [SAMPLE_DOC]},
    "/v1/collections/<c>/documents/<path:doc_id>": {"text": "x"},
    "/v1/collections/<c>/documents:delete": {"ids": ["doc-1"]},
}


def auth(key):
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def keyed(engine, app):
    """An app with keys over the shared engine, and collections A and B with a document."""
    opened = app.test_client()
    for name in (A, B):
        opened.post("/v1/collections", json={"name": name})
        task = opened.post(f"/v1/collections/{name}/documents", json={"documents": [SAMPLE_DOC]})
        assert wait_task(opened, task.json["task_id"])["indexed"] == 1
    from api.app import create_app

    yield create_app(app_config(engine.settings, api_keys=KEYS), engine)
    for name in (A, B):
        opened.delete(f"/v1/collections/{name}")


def routes(app, role=None):
    """(rule, method, view role) of every endpoint but the static files."""
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        view_role = getattr(app.view_functions[rule.endpoint], ROLE_ATTR, "admin")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if role is None or view_role == role:
                out.append((rule, method, view_role))
    return out


def call(client, rule, method, collection, headers):
    url = rule.build({**ARGS, "c": collection}, append_unknown=False)[1]
    body = BODIES.get(rule.rule)
    if rule.rule in ("/v1/search", "/v1/context"):
        body = {**body, "collection": collection}
    return client.open(url, method=method, json=body, headers=headers)


def test_no_key_is_401_and_public_endpoints_stay_open(keyed):
    client = keyed.test_client()
    for rule, method, role in routes(keyed):
        response = call(client, rule, method, A, {})
        if role == PUBLIC:
            assert response.status_code in (200, 404), rule.rule  # 404: page not installed
        else:
            assert response.status_code == 401, (method, rule.rule)
            assert error_code(response) == "unauthorized"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = client.post("/v1/search", json={"query": "x"}, headers=auth("nope"))
    assert wrong.status_code == 401 and "unknown" in wrong.json["error"]["message"]


def test_both_headers_carry_the_key(keyed):
    client = keyed.test_client()
    assert client.get("/v1/collections", headers=auth("adm")).status_code == 200
    assert client.get("/v1/collections", headers={"X-API-Key": "adm"}).status_code == 200


def test_search_key_gets_403_on_every_admin_endpoint(keyed):
    client = keyed.test_client()
    admin = routes(keyed, "admin")
    assert len(admin) >= 10
    for rule, method, _ in admin:
        response = call(client, rule, method, A, auth("srch"))
        assert response.status_code == 403, (method, rule.rule, response.json)
        assert error_code(response) == "forbidden"


def test_search_key_may_search_read_stats_and_rerank(keyed):
    client = keyed.test_client()
    for rule, method, _ in routes(keyed, "search"):
        response = call(client, rule, method, B, auth("srch"))
        if rule.rule.endswith("rerank"):
            response = client.post(
                rule.rule, json={"query": "storm", "documents": ["a"]}, headers=auth("srch")
            )
        assert response.status_code == 200, (method, rule.rule, response.json)


@pytest.mark.parametrize("key", ["scoped", "scopedsearch"])
def test_scoped_key_sees_other_collections_as_404_everywhere(keyed, key):
    client = keyed.test_client()
    checked = 0
    for rule, method, role in routes(keyed):
        takes_collection = "<c>" in rule.rule or rule.rule in ("/v1/search", "/v1/context")
        if not takes_collection or (role == "admin" and key == "scopedsearch"):
            continue
        for other in (B, "never-created"):
            response = call(client, rule, method, other, auth(key))
            assert response.status_code == 404, (method, rule.rule, other, response.json)
            assert response.json["error"]["message"] == f"collection {other!r} not found"
        checked += 1
    assert checked >= (2 if key == "scopedsearch" else 10)
    # Its own collection works.
    assert client.get(f"/v1/collections/{A}/stats", headers=auth(key)).status_code == 200
    search = client.post("/v1/search", json={"query": "storm", "collection": A}, headers=auth(key))
    assert search.status_code == 200 and search.json["hits"]


def test_scoped_admin_key_lists_creates_and_reads_tasks_only_in_scope(keyed):
    client = keyed.test_client()
    listed = client.get("/v1/collections", headers=auth("scoped")).json["collections"]
    assert [c["name"] for c in listed] == [A]
    everything = client.get("/v1/collections", headers=auth("adm")).json["collections"]
    assert {A, B, "default"} <= {c["name"] for c in everything}
    create = client.post("/v1/collections", json={"name": "elsewhere"}, headers=auth("scoped"))
    assert create.status_code == 404
    tasks = {}
    for name in (A, B):
        response = client.post(
            f"/v1/collections/{name}/documents",
            json={"documents": [SAMPLE_DOC]},
            headers=auth("adm"),
        )
        tasks[name] = response.json["task_id"]
    assert client.get(f"/v1/tasks/{tasks[A]}", headers=auth("scoped")).status_code == 200
    other = client.get(f"/v1/tasks/{tasks[B]}", headers=auth("scoped"))
    assert other.status_code == 404 and error_code(other) == "not_found"
    assert client.get(f"/v1/tasks/{tasks[B]}", headers=auth("adm")).status_code == 200
