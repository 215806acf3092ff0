"""The OpenAPI 3.1 document: pydantic models' JSON schemas plus a table of paths.

The table is the one hand-written part; ``tests/api/test_api_ops.py`` checks
that it lists exactly the app's routes, so an endpoint cannot go undocumented.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import BaseModel, RootModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from api import responses as r
from api import schemas as s
from api.docs_page import ASSETS
from search.config import COLLECTION_PATTERN
from search.engine import DEFAULT_LIST_DOCUMENTS, MAX_LIST_DOCUMENTS
from search.records import MAX_METADATA_FILTERS, MAX_PREFIX, STATUSES

REF = "#/components/schemas/{model}"
ERROR_TEXT = {
    400: "Malformed JSON or a cursor that does not belong to this query",
    401: "Missing or unknown API key",
    403: "The key's role may not use this endpoint",
    404: "Not found (or outside the key's collections)",
    405: "Method not allowed",
    409: "Already exists",
    413: "Body, batch or rerank list too large",
    415: "The body is not JSON",
    422: "Invalid request",
    429: "Rate limited (see Retry-After)",
    503: "A backend needed for the answer is unavailable",
}
COMMON = (401, 403, 405, 429)
WITH_BODY = (400, 413, 415, 422)


@dataclass(frozen=True)
class Op:
    """One operation of the path table."""

    method: str
    path: str
    summary: str
    tag: str
    ok: tuple[int, type[BaseModel] | None]
    body: type[BaseModel] | None = None
    multipart: bool = False
    errors: tuple[int, ...] = ()
    public: bool = False
    query: tuple[str, ...] = ()  # optional query parameters (QUERY)


def _rerank_op(path: str, tei: bool = False) -> Op:
    return Op(
        "post",
        path,
        "Rerank documents (Cohere, Jina"
        + (" and text-embeddings-inference" if tei else "")
        + " compatible)",
        "search",
        (200, r.AnyRerankOut if tei else r.RerankOutBody),
        s.AnyRerankBody if tei else s.RerankBody,
        errors=(*WITH_BODY, 503),
    )


# One operation per entry, compact: a table reads better than the formatter's layout.
# fmt: off
OPERATIONS: tuple[Op, ...] = (
    Op("post", "/v1/search", "Hybrid search, paginated", "search", (200, r.SearchOut),
       s.SearchBody, errors=(*WITH_BODY, 404, 503)),
    Op("post", "/v1/context", "Cited context for an LLM within a token budget", "search",
       (200, r.ContextOut), s.ContextBody, errors=(*WITH_BODY, 404, 503)),
    _rerank_op("/v1/rerank"),
    _rerank_op("/v2/rerank"),
    _rerank_op("/rerank", tei=True),
    Op("get", "/v1/collections", "List collections", "admin", (200, r.CollectionsOut)),
    Op("post", "/v1/collections", "Create a collection", "admin", (201, r.CreatedOut),
       s.CollectionBody, errors=(*WITH_BODY, 404, 409)),
    Op("delete", "/v1/collections/{c}", "Delete a collection", "admin", (200, r.DroppedOut),
       errors=(404, 422, 503)),
    Op("get", "/v1/collections/{c}/stats", "Collection counts", "admin", (200, r.StatsOut),
       errors=(404, 422, 503)),
    Op("post", "/v1/collections/{c}/documents", "Index documents (queued)", "admin",
       (202, r.TaskAcceptedOut), s.DocumentsBody, errors=(*WITH_BODY, 404)),
    Op("get", "/v1/collections/{c}/documents", "List documents, one page in id order", "admin",
       (200, r.DocumentListOut), errors=(404, 422),
       query=("after", "limit", "prefix", "status", "meta.{key}")),
    Op("put", "/v1/collections/{c}/documents/{doc_id}", "Insert or replace a document (queued)",
       "admin", (202, r.TaskAcceptedOut), s.DocumentFields, errors=(*WITH_BODY, 404)),
    Op("get", "/v1/collections/{c}/documents/{doc_id}", "Get a document", "admin",
       (200, r.DocumentOut), errors=(404, 422)),
    Op("get", "/v1/collections/{c}/chunks", "A document's chunks and where each is indexed",
       "admin", (200, r.DocumentChunksOut), errors=(404, 422, 503), query=("doc_id",)),
    Op("delete", "/v1/collections/{c}/documents/{doc_id}", "Delete a document", "admin",
       (200, r.DeletedOut), errors=(404, 422, 503)),
    Op("post", "/v1/collections/{c}/documents:upload", "Upload files to index (queued)",
       "admin", (202, r.UploadAcceptedOut), multipart=True, errors=(*WITH_BODY, 404)),
    Op("post", "/v1/collections/{c}/documents:delete", "Delete documents by id", "admin",
       (200, r.DeletedOut), s.DeleteBody, errors=(*WITH_BODY, 404, 503)),
    Op("get", "/v1/tasks/{task_id}", "Indexing task progress", "admin", (200, r.TaskOut),
       errors=(404,)),
    Op("get", "/healthz", "Liveness", "ops", (200, r.HealthOut), public=True),
    Op("get", "/readyz", "Readiness of every backend", "ops", (200, r.ReadyOut), public=True,
       errors=(503,)),
    Op("get", "/metrics", "Prometheus metrics", "ops", (200, None), public=True),
    Op("get", "/openapi.json", "This document", "ops", (200, None), public=True),
    Op("get", "/docs", "API reference with a try-it-out console (Swagger UI)", "ops",
       (200, None), public=True),
    Op("get", "/docs/assets/{name}", "A file of the bundled Swagger UI", "ops", (200, None),
       public=True, errors=(404,)),
    Op("get", "/", "Search page", "pages", (200, None), public=True, errors=(404,)),
    Op("get", "/admin", "Admin page", "pages", (200, None), public=True, errors=(404,)),
)
# fmt: on

PARAMETERS: dict[str, dict[str, Any]] = {
    "c": {"type": "string", "pattern": COLLECTION_PATTERN},
    "doc_id": {"type": "string", "minLength": 1, "maxLength": 512},
    "task_id": {"type": "string", "minLength": 1},
    "name": {"type": "string", "enum": sorted(ASSETS)},
}
QUERY: dict[str, dict[str, Any]] = {
    "after": {
        "schema": {"type": "string"},
        "description": "List the documents whose ids sort after this one (a page's next_after).",
    },
    "limit": {
        "schema": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_LIST_DOCUMENTS,
            "default": DEFAULT_LIST_DOCUMENTS,
        },
        "description": "Documents per page.",
    },
    "doc_id": {
        "schema": {"type": "string", "minLength": 1, "maxLength": 512},
        "required": True,
        "description": "The document whose chunks to show.",
    },
    "prefix": {
        "schema": {"type": "string", "maxLength": MAX_PREFIX},
        "description": "Only documents whose ids start with this text (taken literally: "
        "`%` and `_` are no wildcards).",
    },
    "status": {
        "schema": {"type": "string", "enum": list(STATUSES)},
        "description": "Only documents in this indexing state.",
    },
    "meta.{key}": {
        "schema": {"type": "string"},
        "description": "Metadata equality, one parameter per key, e.g. `meta.lang=en`: only "
        "documents whose scalar metadata value under `key` is this (an integer in decimal, a "
        "boolean as `true`/`false`, as /v1/search filters compare). Repeat a key for any of "
        f"several values. Keys: letters, digits, `_`, `.`, `:`, `-`; at most "
        f"{MAX_METADATA_FILTERS} keys.",
    },
}
UPLOAD_SCHEMA = {
    "type": "object",
    "properties": {
        "file": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": ".jsonl, .txt, .md, .html or .pdf files (repeat the field)",
        }
    },
    "required": ["file"],
}


def request_examples(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The example bodies of a request model (``api.schemas.examples``); a root model's
    are its variants' (the TEI alias takes both shapes)."""
    extra = model.model_config.get("json_schema_extra")
    bodies = extra.get("examples") if isinstance(extra, dict) else None
    if isinstance(bodies, list):
        return [body for body in bodies if isinstance(body, dict)]
    if issubclass(model, RootModel):
        variants = get_args(model.model_fields["root"].annotation)
        return [body for v in variants if isinstance(v, type) for body in request_examples(v)]
    return []


def _refs() -> tuple[dict[Any, dict[str, Any]], dict[str, Any]]:
    requests = {op.body for op in OPERATIONS if op.body is not None}
    responses = {op.ok[1] for op in OPERATIONS if op.ok[1] is not None} | {r.ErrorOut}
    modes: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((model, "validation") for model in sorted(requests, key=lambda m: m.__name__)),
        *((model, "serialization") for model in sorted(responses, key=lambda m: m.__name__)),
    ]
    keyed, top = models_json_schema(modes, ref_template=REF)
    return dict(keyed), top.get("$defs", {})


def _operation(op: Op, refs: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    status, model = op.ok
    if model is None:
        ok: dict[str, Any] = {"description": "OK"}
    else:
        schema = refs[(model, "serialization")]
        ok = {"description": "OK", "content": {"application/json": {"schema": schema}}}
    error = {"application/json": {"schema": refs[(r.ErrorOut, "serialization")]}}
    codes = sorted(set(op.errors) | (set() if op.public else set(COMMON)))
    out: dict[str, Any] = {
        "summary": op.summary,
        "operationId": op.method + re.sub(r"[^a-z0-9]+", "_", op.path.lower()).rstrip("_"),
        "tags": [op.tag],
        "responses": {
            str(status): ok,
            **{str(code): {"description": ERROR_TEXT[code], "content": error} for code in codes},
        },
    }
    names = re.findall(r"\{(\w+)\}", op.path)
    parameters = [
        {"name": n, "in": "path", "required": True, "schema": PARAMETERS[n]} for n in names
    ]
    parameters += [{"name": n, "in": "query", "required": False, **QUERY[n]} for n in op.query]
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        schema = refs[(op.body, "validation")]
        media: dict[str, Any] = {"schema": schema}
        bodies = request_examples(op.body)
        if bodies:
            # Media-type examples are what Swagger UI's try-it-out starts from.
            media["examples"] = {
                f"example {n}": {"value": body} for n, body in enumerate(bodies, start=1)
            }
        out["requestBody"] = {"required": True, "content": {"application/json": media}}
    elif op.multipart:
        out["requestBody"] = {
            "required": True,
            "content": {"multipart/form-data": {"schema": UPLOAD_SCHEMA}},
        }
    out["security"] = [] if op.public else [{"bearer": []}, {"apiKey": []}]
    return out


def build_openapi() -> dict[str, Any]:
    """The whole document (OpenAPI 3.1.0)."""
    refs, components = _refs()
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sieve",
            "version": "1",
            "description": "Hybrid search (BM25 + vectors + fusion + cross-encoder rerank). "
            'Errors are always {"error": {"code", "message", "details"}}.',
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <key>`, a key of SIEVE_API_KEYS.",
                },
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Key",
                    "description": "The same keys in an `X-API-Key` header.",
                },
            },
        },
    }
