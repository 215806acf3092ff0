"""The API reference: ``/docs`` (Swagger UI from its package), field descriptions, examples.

The examples are the try-it-out console's starting requests, so each is sent to
the app here: an example the API refuses fails this test instead of a user.
"""

from __future__ import annotations

import re
import uuid
from typing import get_args

import pytest
from pydantic import BaseModel, RootModel

from api.openapi import OPERATIONS, build_openapi, request_examples

pytestmark = pytest.mark.integration


def test_docs_page_loads_swagger_ui_from_the_server_itself(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    sources = re.findall(r"<(?:script|link)[^>]+(?:src|href)=\"([^\"]+)\"", page.text)
    assert "/docs/assets/swagger-ui-bundle.js" in sources
    assert not [s for s in sources if s.startswith(("http:", "https:", "//"))], sources
    for source in sources:
        if source.startswith("/"):
            answer = client.get(source)
            assert answer.status_code == 200 and answer.data, source
    assert b"SwaggerUIBundle" in client.get("/docs/assets/swagger-ui-bundle.js").data
    assert client.get("/docs/assets/VERSION").text.startswith("v5.")


def test_only_the_viewers_own_files_are_served(client):
    assert client.get("/docs/assets/index.css").status_code == 404
    assert client.get("/docs/assets/..%2Fflask_swagger_ui.py").status_code == 404


def _request_models() -> list[type[BaseModel]]:
    models = {op.body for op in OPERATIONS if op.body is not None}
    return sorted(models, key=lambda m: m.__name__)


@pytest.mark.parametrize("model", _request_models(), ids=lambda m: m.__name__)
def test_every_request_field_is_described_and_every_body_has_an_example(model):
    doc = build_openapi()
    examples = request_examples(model)
    assert examples, f"{model.__name__} has no example"
    schemas = doc["components"]["schemas"]
    names = [model.__name__]
    if issubclass(model, RootModel):  # the TEI alias: its variants are documented
        names = [v.__name__ for v in get_args(model.model_fields["root"].annotation)]
    for name in names:
        for field, schema in schemas[name]["properties"].items():
            assert schema.get("description"), f"{name}.{field} has no description"
    for body in examples:
        model.model_validate(body)  # strict, as the API parses them


def test_each_example_is_accepted_by_the_api(client):
    doc = build_openapi()
    collection = f"ex-{uuid.uuid4().hex[:10]}"
    assert client.post("/v1/collections", json={"name": collection}).status_code == 201
    try:
        sent = 0
        for path, methods in doc["paths"].items():
            for method, op in methods.items():
                media = op.get("requestBody", {}).get("content", {}).get("application/json")
                for example in (media or {}).get("examples", {}).values():
                    url = path.replace("{c}", collection).replace("{doc_id}", "nosebleed")
                    body = example["value"]
                    if path == "/v1/collections":
                        body = {"name": f"{collection}-new"}  # the example's name may exist
                    answer = client.open(url, method=method.upper(), json=body)
                    assert answer.status_code < 300, (method, path, body, answer.json)
                    sent += 1
        assert sent >= 10
    finally:
        client.delete(f"/v1/collections/{collection}")
        client.delete(f"/v1/collections/{collection}-new")
