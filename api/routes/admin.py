"""Collections, documents, uploads and indexing tasks (role ``admin``; stats: ``search``).

Writes are queued (202 with a task id, ``api.jobs``); reads and deletes are
answered at once. Every collection in a path goes through
``auth.scoped_collection``: out of scope and absent look the same (404).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request, url_for

from api.auth import principal, requires, scoped_collection, visible
from api.errors import ApiError
from api.jobs import IndexJob
from api.listing import list_query
from api.schemas import CollectionBody, DeleteBody, DocumentFields, DocumentsBody
from api.state import json_body, services
from api.uploads import count_documents, load_files, read_uploads
from search.types import Document

bp = Blueprint("admin", __name__)


def _collection(name: str) -> str:
    return scoped_collection(name, services().engine.has_collection)


def _accepted(job: IndexJob, **extra: object) -> Response:
    task_id = services().jobs.submit(job)
    response = jsonify({"task_id": task_id, **extra})
    response.status_code = 202
    response.headers["Location"] = url_for("admin.get_task", task_id=task_id)
    return response


def _check_batch(count: int) -> None:
    limit = services().api.max_batch_docs
    if count > limit:
        raise ApiError(
            413,
            f"{count} documents; at most {limit} per request (SIEVE_MAX_BATCH_DOCS)",
            limit=limit,
        )


def _check_sizes(job: IndexJob) -> None:
    """413 naming the first document over ``SIEVE_MAX_DOCUMENT_BYTES``; nothing is accepted."""
    limit = services().api.max_document_bytes
    for name, size in job.sizes():
        if size > limit:
            raise ApiError(
                413,
                f"{name} is {size} bytes; one document may have at most {limit} "
                "(SIEVE_MAX_DOCUMENT_BYTES): split it, or raise the limit",
                limit=limit,
                document=name,
            )


def _document(doc_id: str, fields: DocumentFields) -> Document:
    return Document(
        id=doc_id,
        text=fields.text,
        title=fields.title,
        metadata=fields.metadata,
        source="api",
        content_type=fields.content_type,
    )


@bp.get("/v1/collections")
@requires("admin")
def list_collections() -> Response:
    """Collections the caller may see, with document and chunk counts."""
    rows = services().engine.collections()
    names = set(visible(str(row["name"]) for row in rows))
    return jsonify({"collections": [row for row in rows if row["name"] in names]})


@bp.post("/v1/collections")
@requires("admin")
def create_collection() -> Response:
    """Create an empty collection (409 if it exists)."""
    body = json_body(CollectionBody)
    if not principal().may_use(body.name):
        raise ApiError(404, f"collection {body.name!r} not found", collection=body.name)
    services().engine.create_collection(body.name)
    response = jsonify({"name": body.name})
    response.status_code = 201
    return response


@bp.delete("/v1/collections/<c>")
@requires("admin")
def drop_collection(c: str) -> Response:
    """Delete a collection, its documents and both indexes' data."""
    documents = services().engine.drop_collection(_collection(c))
    return jsonify({"deleted": c, "documents": documents})


@bp.get("/v1/collections/<c>/stats")
@requires("search")
def collection_stats(c: str) -> Response:
    """Registry and index counts."""
    return jsonify(services().engine.stats(_collection(c)))


@bp.post("/v1/collections/<c>/documents")
@requires("admin")
def add_documents(c: str) -> Response:
    """Queue a batch of documents for indexing."""
    name = _collection(c)
    body = json_body(DocumentsBody)
    _check_batch(len(body.documents))
    documents = tuple(_document(doc.id, doc) for doc in body.documents)
    job = IndexJob(name, documents=documents)
    _check_sizes(job)
    return _accepted(job)


@bp.put("/v1/collections/<c>/documents/<path:doc_id>")
@requires("admin")
def put_document(c: str, doc_id: str) -> Response:
    """Queue one document (insert or replace) for indexing."""
    name = _collection(c)
    body = json_body(DocumentFields)
    job = IndexJob(name, documents=(_document(doc_id, body),))
    _check_sizes(job)
    return _accepted(job)


@bp.post("/v1/collections/<c>/documents:upload")
@requires("admin")
def upload_documents(c: str) -> Response:
    """Queue uploaded files (multipart field ``file``, repeatable) for indexing.

    The files are read here, so the answer says for each whether it was accepted
    (with how many documents) or refused, and why (``api.uploads.FileResult``).
    """
    name = _collection(c)
    files = request.files.getlist("file")
    if not files:
        raise ApiError(422, "no file: send multipart/form-data with one or more 'file' fields")
    uploads = read_uploads((f.filename, f.read()) for f in files)
    _check_batch(sum(count_documents(upload) for upload in uploads))
    _check_sizes(IndexJob(name, files=uploads))  # the bytes sent, before anything is read
    results = load_files(uploads)
    job = IndexJob(
        name,
        documents=tuple(doc for result in results for doc in result.documents),
        errors=tuple(line for result in results for line in result.errors),
    )
    return _accepted(job, files=[result.to_dict() for result in results])


@bp.get("/v1/collections/<c>/documents")
@requires("admin")
def list_documents(c: str) -> Response:
    """One page of the collection's documents in id order, filtered (``api.listing``)."""
    name = _collection(c)
    query = list_query(request.args)
    page = services().engine.list_documents(
        name, after=query.after, limit=query.limit, where=query.where
    )
    documents = [
        {
            "id": d.id,
            "title": d.title,
            "status": d.status,
            "chunks": d.chunks,
            "error": d.error,
            "updated_at": d.updated_at.isoformat(),
        }
        for d in page
    ]
    next_after = page[-1].id if len(page) == query.limit else None
    return jsonify({"documents": documents, "next_after": next_after})


@bp.get("/v1/collections/<c>/documents/<path:doc_id>")
@requires("admin")
def get_document(c: str, doc_id: str) -> Response:
    """A document as stored, with its indexing status."""
    return jsonify(services().engine.get_document(_collection(c), doc_id))


@bp.get("/v1/collections/<c>/chunks")
@requires("admin")
def document_chunks(c: str) -> Response:
    """``?doc_id=ID``: the chunks of that document's text and which index holds each."""
    name = _collection(c)
    doc_id = request.args.get("doc_id", "")
    if not doc_id:
        raise ApiError(422, "doc_id: name the document whose chunks to show (?doc_id=ID)")
    return jsonify(services().engine.document_chunks(name, doc_id).to_dict())


@bp.delete("/v1/collections/<c>/documents/<path:doc_id>")
@requires("admin")
def delete_document(c: str, doc_id: str) -> Response:
    """Delete one document (404 if unknown)."""
    name = _collection(c)
    engine = services().engine
    engine.get_document(name, doc_id)  # NotFound (404) before anything is touched
    return jsonify({"deleted": engine.delete([doc_id], name)})


@bp.post("/v1/collections/<c>/documents:delete")
@requires("admin")
def delete_documents(c: str) -> Response:
    """Delete documents by id; an empty list is a 422 and deletes nothing."""
    name = _collection(c)
    body = json_body(DeleteBody)
    deleted = services().engine.delete(body.ids, name)
    return jsonify({"deleted": deleted, "not_found": sorted(set(body.ids) - set(deleted))})


@bp.get("/v1/tasks/<task_id>")
@requires("admin")
def get_task(task_id: str) -> Response:
    """Progress of an indexing task (404 when unknown, forgotten, or out of scope)."""
    task = services().jobs.get(task_id)
    if task is None or not principal().may_use(task["collection"]):
        raise ApiError(404, f"task {task_id!r} not found")
    return jsonify(task)
